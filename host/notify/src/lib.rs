//! Email notifications for the access-request workflow: typed events, worded in one place,
//! sent over SMTP (plain, STARTTLS or implicit TLS; rustls with aws-lc-rs) from a bounded queue
//! that never makes the workflow wait.
//!
//! The workflow builds a [`Notifier`] from the `mail` settings (or a disabled one when mail is
//! not configured), calls [`Notifier::notify`] with a [`Notification`], and audits the
//! [`DeliveryReport`]s its [`DeliverySink`] receives. See docs/notifications.md.

mod mailer;
mod message;
mod notifier;
mod settings;

pub use mailer::{Mailer, SendError};
pub use message::{
    AccessKind, Event, EventKind, Notification, Rendered, RequestSummary, request_link,
};
pub use notifier::{
    DEFAULT_QUEUE_CAPACITY, DeliveryOutcome, DeliveryReport, DeliverySink, Notifier, NotifyError,
    StartError, deliver,
};
pub use settings::{
    DEFAULT_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS, MailSettings, Security, SettingsError,
};
