//! Sending one message over SMTP with lettre, TLS by rustls with aws-lc-rs.
//!
//! Each recipient gets a message of their own, so one refused address does not stop the
//! others and recipients do not see each other. Failures are classified into [`SendError`],
//! whose text names the server and the recipient, never the credentials.

use crate::message::{Notification, Rendered};
use crate::settings::{MailSettings, Security, SettingsError};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::time::Duration;

/// Why one message was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("recipient `{recipient}` is not a valid email address: {reason}")]
    InvalidRecipient { recipient: String, reason: String },
    #[error("cannot build the message to `{recipient}`: {reason}")]
    Message { recipient: String, reason: String },
    #[error(
        "the certificate of mail server `{server}` is not trusted ({detail}); set `ca_file` to the certificate of the CA that signed it"
    )]
    CertificateNotTrusted { server: String, detail: String },
    #[error("TLS with mail server `{server}` failed: {detail}")]
    Tls { server: String, detail: String },
    #[error("cannot reach mail server `{server}`: {detail}")]
    Connection { server: String, detail: String },
    #[error("mail server `{server}` did not answer within {seconds} s")]
    Timeout { server: String, seconds: u64 },
    #[error("mail server `{server}` refused {}: {detail}", what(recipient))]
    Rejected {
        server: String,
        /// None for [`Mailer::check_connection`].
        recipient: Option<String>,
        detail: String,
    },
    #[error(
        "mail server `{server}` deferred {} (try again later): {detail}",
        what(recipient)
    )]
    Deferred {
        server: String,
        recipient: Option<String>,
        detail: String,
    },
    #[error("{} through mail server `{server}` failed: {detail}", what(recipient))]
    Other {
        server: String,
        recipient: Option<String>,
        detail: String,
    },
}

/// What a server refused: a message, or the connection check.
fn what(recipient: &Option<String>) -> String {
    match recipient {
        Some(recipient) => format!("the message to `{recipient}`"),
        None => "the connection check".to_owned(),
    }
}

/// A configured SMTP client. Cheap to share behind an `Arc`; each send opens its own
/// connection (notifications are rare, and a fresh connection never finds a stale one).
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    gateway_url: Option<String>,
    /// `host:port`, for messages.
    server: String,
    security: Security,
    authenticated: bool,
    timeout: Duration,
}

impl std::fmt::Debug for Mailer {
    // By hand: the transport holds the SMTP credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("security", &self.security)
            .field("from", &self.from.to_string())
            .field("authenticated", &self.authenticated)
            .field("gateway_url", &self.gateway_url)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Validates the settings, reads the password and CA files, and sets up TLS. Opens no
    /// connection: see [`Mailer::check_connection`].
    pub fn new(settings: &MailSettings) -> Result<Self, SettingsError> {
        let from = settings.validate()?;
        let port = settings.effective_port();
        let timeout = settings.timeout();
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(port)
            .timeout(Some(timeout));

        if settings.security != Security::None {
            let parameters = tls_parameters(settings)?;
            builder = builder.tls(match settings.security {
                Security::Starttls => Tls::Required(parameters),
                _ => Tls::Wrapper(parameters),
            });
        }

        let password = settings.read_password()?;
        let authenticated = match (&settings.username, password) {
            (Some(username), Some(password)) => {
                // lettre keeps its own copy of the password for the transport's lifetime; ours is
                // wiped when `password` drops here.
                builder = builder.credentials(Credentials::new(
                    username.clone(),
                    password.expose().to_owned(),
                ));
                true
            }
            _ => false,
        };

        Ok(Self {
            transport: builder.build(),
            from,
            gateway_url: settings
                .gateway_url
                .as_ref()
                .map(|url| url.trim_end_matches('/').to_owned()),
            server: format!("{}:{port}", settings.host),
            security: settings.security,
            authenticated,
            timeout,
        })
    }

    /// `host:port` of the mail server.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The subject and body this mailer sends for a notification.
    pub fn render(&self, notification: &Notification) -> Rendered {
        notification.render(self.gateway_url.as_deref())
    }

    /// Connects, says hello, upgrades to TLS and authenticates as configured, then quits.
    /// For an operator's "test the mail settings" button.
    pub async fn check_connection(&self) -> Result<(), SendError> {
        let attempt = self.transport.test_connection();
        match tokio::time::timeout(self.deadline(), attempt).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(SendError::Connection {
                server: self.server.clone(),
                detail: "the server did not answer NOOP".into(),
            }),
            Ok(Err(error)) => Err(self.classify(&error, None)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Sends `rendered` to one recipient.
    pub async fn send(&self, rendered: &Rendered, recipient: &str) -> Result<(), SendError> {
        let to = recipient
            .parse::<Mailbox>()
            .map_err(|error| SendError::InvalidRecipient {
                recipient: recipient.to_owned(),
                reason: error.to_string(),
            })?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(rendered.body.clone())
            .map_err(|error| SendError::Message {
                recipient: recipient.to_owned(),
                reason: error.to_string(),
            })?;
        match tokio::time::timeout(self.deadline(), self.transport.send(message)).await {
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(error)) => Err(self.classify(&error, Some(recipient))),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// The bound on one whole delivery: each step has `timeout`, a delivery has three times it.
    fn deadline(&self) -> Duration {
        self.timeout.saturating_mul(3)
    }

    fn timed_out(&self) -> SendError {
        SendError::Timeout {
            server: self.server.clone(),
            seconds: self.deadline().as_secs(),
        }
    }

    fn classify(
        &self,
        error: &lettre::transport::smtp::Error,
        recipient: Option<&str>,
    ) -> SendError {
        let server = self.server.clone();
        let recipient = recipient.map(str::to_owned);
        if let Some(tls_error) = find_rustls_error(error) {
            let detail = tls_error.to_string();
            return match tls_error {
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                    SendError::CertificateNotTrusted { server, detail }
                }
                _ => SendError::Tls { server, detail },
            };
        }
        let detail = error.to_string();
        if error.is_timeout() {
            return SendError::Timeout {
                server,
                seconds: self.timeout.as_secs(),
            };
        }
        if error.is_permanent() {
            return SendError::Rejected {
                server,
                recipient,
                detail,
            };
        }
        if error.is_transient() {
            return SendError::Deferred {
                server,
                recipient,
                detail,
            };
        }
        if error.is_tls() {
            return SendError::Tls { server, detail };
        }
        // lettre says so only in words; the setting asks for STARTTLS or nothing.
        if error.is_client() && detail.contains("STARTTLS") {
            return SendError::Tls {
                server,
                detail: "the server does not offer STARTTLS, which `security` `starttls` requires"
                    .to_owned(),
            };
        }
        if find_io_error(error).is_some() {
            return SendError::Connection { server, detail };
        }
        SendError::Other {
            server,
            recipient,
            detail,
        }
    }
}

fn tls_parameters(settings: &MailSettings) -> Result<TlsParameters, SettingsError> {
    let tls_error = |detail: String| SettingsError::Tls {
        host: settings.host.clone(),
        detail,
    };
    let mut builder = TlsParameters::builder(settings.host.clone());
    if let Some(certificates) = settings.read_ca_certificates()? {
        // The CA file replaces the built-in roots rather than adding to them.
        builder = builder.certificate_store(CertificateStore::None);
        for der in certificates {
            let certificate =
                Certificate::from_der(der).map_err(|error| tls_error(error.to_string()))?;
            builder = builder.add_root_certificate(certificate);
        }
    } else {
        builder = builder.certificate_store(CertificateStore::WebpkiRoots);
    }
    builder
        .build_rustls()
        .map_err(|error| tls_error(error.to_string()))
}

/// The rustls error somewhere in the chain (TLS handshake failures reach lettre as an
/// `io::Error` wrapping it).
fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(io_error) = error.downcast_ref::<std::io::Error>()
            && let Some(found) = io_error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        current = error.source();
    }
    None
}

fn find_io_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut current: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<std::io::Error>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}
