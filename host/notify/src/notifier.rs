//! The queue between the workflow and the mail server.
//!
//! [`Notifier::notify`] only puts the notification in a bounded queue and returns: a slow or
//! dead mail server never stalls an approval. One background task delivers the queue in order
//! and tells a [`DeliverySink`] how each delivery went, so the workflow can audit it.

use crate::mailer::{Mailer, SendError};
use crate::message::{EventKind, Notification};
use crate::settings::{MailSettings, SettingsError};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// Notifications waiting for delivery before [`Notifier::notify`] refuses more.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;

/// How one delivery went, for the audit trail. Carries addresses and error text, never
/// credentials or message bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub request_id: String,
    pub event: EventKind,
    pub outcome: DeliveryOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The mail server accepted the message for this recipient.
    Delivered { recipient: String },
    /// The message to this recipient was not delivered.
    Failed { recipient: String, error: SendError },
    /// The notification named nobody to send to.
    NoRecipients,
    /// Mail is not configured; reported once, for the first notification.
    NotConfigured,
}

impl std::fmt::Display for DeliveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = format!("`{}` mail for request `{}`", self.event, self.request_id);
        match &self.outcome {
            DeliveryOutcome::Delivered { recipient } => {
                write!(f, "{what} delivered to `{recipient}`")
            }
            DeliveryOutcome::Failed { recipient, error } => {
                write!(f, "{what} not delivered to `{recipient}`: {error}")
            }
            DeliveryOutcome::NoRecipients => write!(f, "{what} not sent: no recipients"),
            DeliveryOutcome::NotConfigured => write!(f, "{what} not sent: mail not configured"),
        }
    }
}

/// Receives delivery reports. Called from the delivery task: it must be quick and must not
/// block (hand the report to a channel or write an audit event).
pub trait DeliverySink: Send + Sync + 'static {
    fn report(&self, report: DeliveryReport);
}

impl<F> DeliverySink for F
where
    F: Fn(DeliveryReport) + Send + Sync + 'static,
{
    fn report(&self, report: DeliveryReport) {
        self(report)
    }
}

/// Why a notification was not queued. It is dropped; the caller should audit this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error(
        "the mail queue is full ({capacity} notifications waiting): the `{event}` mail for request `{request_id}` was dropped"
    )]
    QueueFull {
        request_id: String,
        event: EventKind,
        capacity: usize,
    },
    #[error(
        "the mail sender has stopped: the `{event}` mail for request `{request_id}` was dropped"
    )]
    Stopped {
        request_id: String,
        event: EventKind,
    },
}

/// Why a notifier could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("the mail sender needs a tokio runtime, and none is running")]
    NoRuntime,
}

/// The workflow's handle on mail. Clones share one queue; the delivery task ends once every
/// clone is dropped and the queue is empty.
#[derive(Clone)]
pub struct Notifier {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Disabled {
        sink: Arc<dyn DeliverySink>,
        reported: Arc<AtomicBool>,
    },
    Enabled {
        queue: mpsc::Sender<Notification>,
        capacity: usize,
    },
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Disabled { .. } => f.write_str("Notifier(mail not configured)"),
            Inner::Enabled { queue, capacity } => f
                .debug_struct("Notifier")
                .field("capacity", capacity)
                .field("free", &queue.capacity())
                .finish(),
        }
    }
}

impl Notifier {
    /// The notifier for the gateway's settings: disabled when there is no `mail` section,
    /// otherwise a [`Mailer`] with a queue of [`DEFAULT_QUEUE_CAPACITY`].
    pub fn from_settings(
        settings: Option<&MailSettings>,
        sink: Arc<dyn DeliverySink>,
    ) -> Result<Self, StartError> {
        match settings {
            None => Ok(Self::disabled(sink)),
            Some(settings) => Self::start(Mailer::new(settings)?, sink, DEFAULT_QUEUE_CAPACITY),
        }
    }

    /// A notifier that sends nothing. The first notification is reported as
    /// [`DeliveryOutcome::NotConfigured`]; later ones silently.
    pub fn disabled(sink: Arc<dyn DeliverySink>) -> Self {
        Self {
            inner: Inner::Disabled {
                sink,
                reported: Arc::new(AtomicBool::new(false)),
            },
        }
    }

    /// Starts the delivery task on the current tokio runtime, with room for `capacity`
    /// waiting notifications (at least one).
    pub fn start(
        mailer: Mailer,
        sink: Arc<dyn DeliverySink>,
        capacity: usize,
    ) -> Result<Self, StartError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let capacity = capacity.max(1);
        let (queue, receiver) = mpsc::channel(capacity);
        tracing::info!(
            server = mailer.server(),
            capacity,
            "mail notifications enabled"
        );
        runtime.spawn(run(mailer, receiver, sink));
        Ok(Self {
            inner: Inner::Enabled { queue, capacity },
        })
    }

    /// Whether mail is configured.
    pub fn is_enabled(&self) -> bool {
        matches!(self.inner, Inner::Enabled { .. })
    }

    /// Queues a notification and returns at once; it never waits for the mail server.
    pub fn notify(&self, notification: Notification) -> Result<(), NotifyError> {
        match &self.inner {
            Inner::Disabled { sink, reported } => {
                if !reported.swap(true, Ordering::SeqCst) {
                    tracing::info!(
                        request = %notification.request.id,
                        "mail is not configured: notifications are not sent"
                    );
                    sink.report(DeliveryReport {
                        request_id: notification.request.id,
                        event: notification.event.kind(),
                        outcome: DeliveryOutcome::NotConfigured,
                    });
                }
                Ok(())
            }
            Inner::Enabled { queue, capacity } => {
                queue.try_send(notification).map_err(|error| match error {
                    mpsc::error::TrySendError::Full(notification) => NotifyError::QueueFull {
                        request_id: notification.request.id,
                        event: notification.event.kind(),
                        capacity: *capacity,
                    },
                    mpsc::error::TrySendError::Closed(notification) => NotifyError::Stopped {
                        request_id: notification.request.id,
                        event: notification.event.kind(),
                    },
                })
            }
        }
    }
}

async fn run(mailer: Mailer, mut queue: mpsc::Receiver<Notification>, sink: Arc<dyn DeliverySink>) {
    while let Some(notification) = queue.recv().await {
        for report in deliver(&mailer, &notification).await {
            sink.report(report);
        }
    }
    tracing::debug!(server = mailer.server(), "mail delivery task ended");
}

/// Sends one notification to each of its recipients (duplicates once), one after the other,
/// and says how each delivery went.
pub async fn deliver(mailer: &Mailer, notification: &Notification) -> Vec<DeliveryReport> {
    let request_id = &notification.request.id;
    let event = notification.event.kind();
    let report = |outcome| DeliveryReport {
        request_id: request_id.clone(),
        event,
        outcome,
    };
    let mut seen = BTreeSet::new();
    let recipients: Vec<&str> = notification
        .recipients
        .iter()
        .map(|recipient| recipient.trim())
        .filter(|recipient| !recipient.is_empty() && seen.insert(recipient.to_lowercase()))
        .collect();
    if recipients.is_empty() {
        tracing::warn!(request = %request_id, %event, "mail not sent: no recipients");
        return vec![report(DeliveryOutcome::NoRecipients)];
    }
    let rendered = mailer.render(notification);
    let mut reports = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        let outcome = match mailer.send(&rendered, recipient).await {
            Ok(()) => {
                tracing::info!(request = %request_id, %event, recipient, "mail delivered");
                DeliveryOutcome::Delivered {
                    recipient: recipient.to_owned(),
                }
            }
            Err(error) => {
                tracing::warn!(request = %request_id, %event, recipient, %error, "mail not delivered");
                DeliveryOutcome::Failed {
                    recipient: recipient.to_owned(),
                    error,
                }
            }
        };
        reports.push(report(outcome));
    }
    reports
}
