//! A complete gateway scenario: a target sshd with one Unix account, a Gatehouse with a user,
//! an asset pinned to the target's host key, a vault credential for the account, a grant, and
//! `gatehouse serve` running. Tests add to it through the builder before the server starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::ssh_client::Client;
use super::{
    Gatehouse, TargetSshd, TestAccount, files_containing, generate_keypair, public_key_path,
};

/// The gateway user every scenario has (password login).
pub const GATEWAY_USER: &str = "alice";
/// alice's gateway password.
pub const GATEWAY_PASSWORD: &str = "Gw-alice-pw-3Jd9xQ";
/// The asset every scenario has: the target sshd, host key pinned.
pub const ASSET: &str = "db1";

/// Everything a setup hook may touch before the server starts.
pub struct SetupCtx<'a> {
    pub gh: &'a Gatehouse,
    pub target: &'a TargetSshd,
    pub account: &'a TestAccount,
    /// A private temp dir for extra keys and files.
    pub scratch: &'a Path,
}

type SetupHook = Box<dyn FnOnce(&SetupCtx<'_>)>;

pub struct WorldBuilder {
    tag: String,
    vault_key: bool,
    key_user: Option<String>,
    hooks: Vec<SetupHook>,
}

impl WorldBuilder {
    /// Store a private key (not a password) as the vault credential; the target accepts only
    /// its public half for this account besides the Unix password the vault does not know.
    pub fn vault_key(mut self) -> Self {
        self.vault_key = true;
        self
    }

    /// Also create gateway user `name` who logs in with a public key, granted the account.
    pub fn key_user(mut self, name: &str) -> Self {
        self.key_user = Some(name.to_string());
        self
    }

    /// Extra configuration, run after the standard setup and before `serve`.
    pub fn setup(mut self, hook: impl FnOnce(&SetupCtx<'_>) + 'static) -> Self {
        self.hooks.push(Box::new(hook));
        self
    }

    pub fn start(self) -> World {
        let scratch = tempfile::Builder::new()
            .prefix("gatehouse-scratch-")
            .tempdir()
            .expect("scratch dir");
        let mut account = TestAccount::new(&self.tag);
        let vault_key = if self.vault_key {
            let (private, public) = generate_keypair(scratch.path(), "vault_key");
            account = account.with_authorized_key(&public);
            Some(private)
        } else {
            None
        };
        let target = TargetSshd::start(std::slice::from_ref(&account));
        let mut gh = Gatehouse::init();

        gh.add_user_with_password(GATEWAY_USER, GATEWAY_PASSWORD);
        gh.add_asset(ASSET, target.port(), &target.host_key());
        let spec = format!("{}@{ASSET}", account.name);
        match &vault_key {
            Some(private) => gh.add_account_with_key(&spec, private),
            None => gh.add_account_with_password(&spec, &account.password),
        }
        gh.grant_user(GATEWAY_USER, &spec);

        let key_user = self.key_user.map(|name| {
            let (private, _public) = generate_keypair(scratch.path(), &format!("user_{name}"));
            gh.add_user_with_key(&name, &public_key_path(&private));
            gh.grant_user(&name, &spec);
            (name, private)
        });

        for hook in self.hooks {
            hook(&SetupCtx {
                gh: &gh,
                target: &target,
                account: &account,
                scratch: scratch.path(),
            });
        }
        gh.serve();
        World {
            target,
            gh,
            account,
            vault_key,
            key_user,
            scratch,
        }
    }
}

pub struct World {
    pub target: TargetSshd,
    pub gh: Gatehouse,
    /// The target Unix account the vault holds a credential for.
    pub account: TestAccount,
    /// The vault's private key, when the credential is a key.
    pub vault_key: Option<PathBuf>,
    /// The public-key gateway user and their private key, if requested.
    pub key_user: Option<(String, PathBuf)>,
    pub scratch: TempDir,
}

impl World {
    /// Target account `ghtest_<tag>`, all defaults (password login, vault password).
    pub fn start(tag: &str) -> World {
        Self::builder(tag).start()
    }

    pub fn builder(tag: &str) -> WorldBuilder {
        WorldBuilder {
            tag: tag.to_string(),
            vault_key: false,
            key_user: None,
            hooks: Vec::new(),
        }
    }

    /// `ACCOUNT@ASSET` of the standard credential.
    pub fn target_spec(&self) -> String {
        format!("{}@{ASSET}", self.account.name)
    }

    /// The in-band login `alice@ACCOUNT@ASSET`.
    pub fn login(&self) -> String {
        format!("{GATEWAY_USER}@{}", self.target_spec())
    }

    /// The vault password (the target account's Unix password).
    pub fn vault_password(&self) -> &str {
        &self.account.password
    }

    /// A password-authenticating client for alice through the gateway.
    pub fn client(&self) -> Client {
        Client::password(self.gh.ssh_port(), self.login(), GATEWAY_PASSWORD)
    }

    /// A password client for an arbitrary in-band login through the gateway.
    pub fn client_as(&self, login: &str, password: &str) -> Client {
        Client::password(self.gh.ssh_port(), login, password)
    }

    /// The public-key gateway user's client (`key_user` must have been requested).
    pub fn key_client(&self) -> Client {
        let (name, key) = self
            .key_user
            .as_ref()
            .expect("world built without key_user");
        Client::key(
            self.gh.ssh_port(),
            format!("{name}@{}", self.target_spec()),
            key,
        )
    }

    /// Secrets must never leak: the vault password appears in no client output, not in the
    /// gateway's TRACE log, and in no file of the data dir (store, recordings, logs). The
    /// gateway password appears in neither the log nor the data dir either.
    pub fn assert_no_secret_leaks(&self, client_outputs: &[&str]) {
        let vault = self.vault_password();
        for (i, text) in client_outputs.iter().enumerate() {
            assert!(
                !text.contains(vault),
                "the vault password leaked into client output #{i}:\n{text}"
            );
        }
        for secret in [vault, GATEWAY_PASSWORD] {
            let forms = super::secret_forms_in(self.gh.log_text().as_bytes(), secret);
            assert!(
                forms.is_empty(),
                "a secret ({}…) appears in the gateway TRACE log {} as {forms:?}",
                &secret[..6],
                self.gh.log_path().display()
            );
            let hits = files_containing(self.gh.data_dir(), secret.as_bytes());
            assert!(
                hits.is_empty(),
                "a secret ({}…) appears in plain text in data-dir files: {hits:?}",
                &secret[..6]
            );
        }
    }

    /// A generous bound for one client operation.
    pub fn slow() -> Duration {
        Duration::from_secs(600)
    }
}
