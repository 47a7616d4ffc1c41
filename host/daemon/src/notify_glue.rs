//! Request events from the workflow to email (gatehouse-notify), and delivery outcomes to the
//! audit trail. Queueing never blocks an approval; a full queue or a failed delivery is audited.

use gatehouse_audit::{Auditor, Entry};
use gatehouse_core::{AccessRequest, AuditKind};
use gatehouse_notify::{
    DeliveryReport, DeliverySink, Event, Notification, Notifier, RequestSummary,
};
use gatehouse_workflow::{Notify, RequestEvent};

/// Writes each delivery outcome to the audit trail.
pub struct AuditDeliveries {
    pub auditor: Auditor,
}

impl DeliverySink for AuditDeliveries {
    fn report(&self, report: DeliveryReport) {
        self.auditor.record_best_effort(
            Entry::new(AuditKind::Notification, report.to_string())
                .field("request", report.request_id.clone()),
        );
    }
}

/// The workflow's `Notify`, sending through a [`Notifier`].
pub struct MailNotify {
    pub notifier: Notifier,
    pub auditor: Auditor,
}

fn text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Notify for MailNotify {
    fn request_event(&self, request: &AccessRequest, event: RequestEvent, recipients: Vec<String>) {
        let event = match event {
            RequestEvent::AwaitingApproval { given, needed } => Event::AwaitingApproval {
                reason: text(&request.reason),
                ticket: text(&request.ticket),
                approvals_given: given,
                approvals_needed: needed,
            },
            RequestEvent::Approved { by } => Event::Approved {
                approved_by: by,
                window_end: request.window_end,
            },
            RequestEvent::Denied { by, comment } => Event::Denied {
                denied_by: by,
                comment: text(&comment),
            },
            RequestEvent::Expired { why } => Event::Expired { why: text(&why) },
            RequestEvent::Revoked { by } => Event::Revoked { revoked_by: by },
        };
        let notification = Notification {
            request: RequestSummary {
                id: request.id.clone(),
                requester: request.requester.to_string(),
                target: request.target(),
                access: request.access,
            },
            event,
            recipients,
        };
        if let Err(e) = self.notifier.notify(notification) {
            self.auditor.record_best_effort(
                Entry::new(
                    AuditKind::Notification,
                    format!("notification not sent: {e}"),
                )
                .field("request", request.id.clone()),
            );
        }
    }
}
