//! A session node's calls about its sessions: logins, session and channel decisions, host-key
//! pins and session ends, each answered by the control node over the cluster's mutual TLS.

use crate::ClusterError;
use crate::node::ControlClient;
use crate::wire::{
    AnswerQuestion, Authenticate, Authenticated, Authorize, AwaitDecision, ChannelCall,
    ChannelVerdict, ControlAnswer, Granted, Held, LoginProof, LoginQuestion, NodeCall,
    PinCertificate, PinHostKey, RdpSecret, SessionEnded, TargetLogin, WireChannel,
};
use gatehouse_core::{Asset, Name, SecretString};
use gatehouse_policy::ChannelRequest;
use gatehouse_vault::TargetCredential;
use std::sync::Mutex;

/// A session the control node permitted, held by the session node that runs it. Only
/// [`ControlClient::authorize`] makes one, from the control node's answer; the SSH gateway dials
/// a target only with a permit (this one, or a local `TargetAuthorization`).
pub struct RemotePermit {
    grant: String,
    asset: Asset,
    account: Name,
    policies: Vec<String>,
    request: Option<String>,
    /// The credential came from a credential-store plugin on the control node, which wants to
    /// know how the target login went ([`ControlClient::target_login`]).
    report_login: bool,
    idle_timeout: Option<(std::time::Duration, String)>,
    /// Taken once, for the target login; zeroized when dropped.
    credential: Mutex<Option<TargetCredential>>,
}

impl std::fmt::Debug for RemotePermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePermit")
            .field("grant", &self.grant)
            .field("asset", &self.asset.name)
            .field("account", &self.account)
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

impl RemotePermit {
    /// The control node's id for the session, named by the node's later calls.
    pub fn grant(&self) -> &str {
        &self.grant
    }
    pub fn asset(&self) -> &Asset {
        &self.asset
    }
    pub fn account(&self) -> &Name {
        &self.account
    }
    /// The ids of the policies that permitted the session.
    pub fn reasons(&self) -> &[String] {
        &self.policies
    }
    /// How long the session may go without input from the user, and the policy that says so.
    pub fn idle_timeout(&self) -> Option<(std::time::Duration, &str)> {
        self.idle_timeout.as_ref().map(|(d, p)| (*d, p.as_str()))
    }
    /// The access request the session runs under.
    pub fn request(&self) -> Option<&str> {
        self.request.as_deref()
    }
    /// Whether the control node wants [`ControlClient::target_login`] after the target login.
    pub fn report_login(&self) -> bool {
        self.report_login
    }
    /// The target credential, once (later calls get `None`).
    pub fn take_credential(&self) -> Option<TargetCredential> {
        self.credential.lock().ok().and_then(|mut c| c.take())
    }
}

/// A login at a node, as the control node's login plugins see it.
#[derive(Debug, Clone, Copy)]
pub struct LoginAttempt<'a> {
    pub session: &'a str,
    pub client: &'a str,
    /// The gateway user name.
    pub user: &'a str,
    /// The whole in-band login as typed.
    pub login: &'a str,
    /// "ssh" or "rdp".
    pub protocol: &'a str,
}

/// What [`ControlClient::authenticate`] and [`ControlClient::answer_question`] answer.
pub enum LoginAnswer {
    Authenticated(Authenticated),
    /// Ask the user (or answer from the login's options) and call
    /// [`ControlClient::answer_question`].
    Question(LoginQuestion),
}

fn login_answer(answer: ControlAnswer) -> Result<LoginAnswer, ClusterError> {
    match answer {
        ControlAnswer::Authenticated(a) => Ok(LoginAnswer::Authenticated(a)),
        ControlAnswer::Question(q) => Ok(LoginAnswer::Question(q)),
        other => Err(unexpected(&other)),
    }
}

/// What [`ControlClient::authorize`] answers.
pub enum Authorized {
    Permit(Box<RemotePermit>),
    /// An access request was filed and waits for approval: hold the connection and ask
    /// [`ControlClient::await_decision`].
    Held(Held),
}

fn permit_of(granted: Granted) -> Result<RemotePermit, ClusterError> {
    Ok(RemotePermit {
        request: granted.request,
        account: Name::new(granted.account).map_err(|e| {
            ClusterError::Protocol(format!("the control node sent a bad account: {e}"))
        })?,
        grant: granted.grant,
        asset: granted.asset,
        policies: granted.policies,
        report_login: granted.report_login,
        idle_timeout: granted
            .idle_timeout
            .map(|(secs, policy)| (std::time::Duration::from_secs(secs), policy)),
        credential: Mutex::new(Some(TargetCredential {
            password: granted.credential.password,
            private_key: granted.credential.private_key,
        })),
    })
}

fn unexpected(answer: &ControlAnswer) -> ClusterError {
    ClusterError::Protocol(format!(
        "unexpected answer from the control node: {answer:?}"
    ))
}

impl ControlClient {
    /// Checks a user's gateway password or key on the control node, where the login plugins
    /// then have their say: authenticated, or a plugin's question for the user.
    pub async fn authenticate(
        &self,
        login: LoginAttempt<'_>,
        proof: LoginProof,
    ) -> Result<LoginAnswer, ClusterError> {
        let call = NodeCall::Authenticate(Authenticate {
            session: login.session.to_string(),
            client: login.client.to_string(),
            user: login.user.to_string(),
            proof,
            login: login.login.to_string(),
            protocol: login.protocol.to_string(),
        });
        login_answer(self.call(call).await?)
    }

    /// The user's answer to a login plugin's question.
    pub async fn answer_question(
        &self,
        question: &LoginQuestion,
        answer: SecretString,
    ) -> Result<LoginAnswer, ClusterError> {
        let call = NodeCall::AnswerQuestion(AnswerQuestion {
            login: SecretString::new(question.login.expose().to_string()),
            answer,
        });
        login_answer(self.call(call).await?)
    }

    /// Asks for a session decision: a permit (with the grant and the credential), or a hold
    /// while an access request filed now waits for approval.
    pub async fn authorize(&self, call: Authorize) -> Result<Authorized, ClusterError> {
        match self.call(NodeCall::Authorize(call)).await? {
            ControlAnswer::Granted(granted) => {
                permit_of(*granted).map(|p| Authorized::Permit(Box::new(p)))
            }
            ControlAnswer::Held(held) => Ok(Authorized::Held(held)),
            other => Err(unexpected(&other)),
        }
    }

    /// Waits a while (10 s at most) for a held session's request: `None` while undecided (ask
    /// again until the hold's time is up); a permit once granted; a `RequestNotGranted`
    /// refusal, in words for the user, when denied or not decided in time.
    pub async fn await_decision(&self, held: &Held) -> Result<Option<RemotePermit>, ClusterError> {
        let call = NodeCall::AwaitDecision(AwaitDecision {
            hold: SecretString::new(held.hold.expose().to_string()),
        });
        match self.call(call).await? {
            ControlAnswer::Granted(granted) => permit_of(*granted).map(Some),
            ControlAnswer::Pending => Ok(None),
            other => Err(unexpected(&other)),
        }
    }

    /// Decides a channel or channel request of a permitted session.
    pub async fn channel(
        &self,
        permit: &RemotePermit,
        channel: &ChannelRequest,
    ) -> Result<ChannelVerdict, ClusterError> {
        let call = NodeCall::Channel(ChannelCall {
            grant: permit.grant.clone(),
            channel: WireChannel::from(channel),
        });
        match self.call(call).await? {
            ControlAnswer::ChannelDecided(verdict) => Ok(verdict),
            other => Err(unexpected(&other)),
        }
    }

    /// Trust on first use: asks the control node to pin `key` (an OpenSSH line) for the
    /// permit's asset. `None`: pinned now; `Some(line)`: the key pinned before.
    pub async fn pin_host_key(
        &self,
        permit: &RemotePermit,
        key: String,
    ) -> Result<Option<String>, ClusterError> {
        let call = NodeCall::PinHostKey(PinHostKey {
            grant: permit.grant.clone(),
            key,
        });
        match self.call(call).await? {
            ControlAnswer::HostKey(answer) => Ok(answer.pinned),
            other => Err(unexpected(&other)),
        }
    }

    /// The NT hash of the user an RDP client names, for the node's NLA exchange with it
    /// (zeroized when dropped).
    pub async fn rdp_nt_hash(
        &self,
        session: &str,
        client: &str,
        user: &str,
    ) -> Result<zeroize::Zeroizing<[u8; 16]>, ClusterError> {
        let call = NodeCall::RdpSecret(RdpSecret {
            session: session.to_string(),
            client: client.to_string(),
            user: user.to_string(),
        });
        let answer = match self.call(call).await? {
            ControlAnswer::RdpSecret(answer) => answer,
            other => return Err(unexpected(&other)),
        };
        use base64::Engine;
        let bytes = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(answer.nt_hash.expose())
                .map_err(|_| {
                    ClusterError::Protocol("the control node sent a bad NT hash".into())
                })?,
        );
        let mut hash = zeroize::Zeroizing::new([0u8; 16]);
        if bytes.len() != hash.len() {
            return Err(ClusterError::Protocol(
                "the control node sent a bad NT hash".into(),
            ));
        }
        hash.copy_from_slice(&bytes);
        Ok(hash)
    }

    /// Trust on first use for an RDP target: asks the control node to pin the certificate key
    /// `pin` for the permit's asset. `None`: pinned now; `Some(pin)`: the key pinned before.
    pub async fn pin_certificate(
        &self,
        permit: &RemotePermit,
        pin: String,
    ) -> Result<Option<String>, ClusterError> {
        let call = NodeCall::PinCertificate(PinCertificate {
            grant: permit.grant.clone(),
            pin,
        });
        match self.call(call).await? {
            ControlAnswer::HostKey(answer) => Ok(answer.pinned),
            other => Err(unexpected(&other)),
        }
    }

    /// Tells the control node how the target login went, when the permit asks for it (the
    /// credential came from a credential-store plugin); best effort.
    pub async fn target_login(&self, permit: &RemotePermit, succeeded: bool) {
        if !permit.report_login {
            return;
        }
        let call = NodeCall::TargetLogin(TargetLogin {
            grant: permit.grant.clone(),
            succeeded,
        });
        if let Err(e) = self.call(call).await {
            tracing::warn!(error = %e, "the control node was not told how the target login went");
        }
    }

    /// Tells the control node a permitted session ended.
    pub async fn session_ended(&self, grant: &str) -> Result<(), ClusterError> {
        let call = NodeCall::SessionEnded(SessionEnded {
            grant: grant.to_string(),
        });
        match self.call(call).await? {
            ControlAnswer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}
