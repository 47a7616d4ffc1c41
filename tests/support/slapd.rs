//! A real OpenLDAP slapd (Debian's package) for the directory tests: its own CA and server
//! certificate (made by openssl), an mdb database seeded from LDIF with people, a service
//! account and nested groups, listening on LDAPS and on plain LDAP (for StartTLS), stopped when
//! dropped. A missing slapd or openssl fails loudly.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, poll, port_open, tool as run};

pub const SUFFIX: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PASSWORD: &str = "Slapd-admin-pw-5";
pub const SERVICE_DN: &str = "cn=gatehouse,ou=services,dc=example,dc=org";
pub const SERVICE_PASSWORD: &str = "Gatehouse-bind-pw-8";

/// A person of the seed: (uid, password).
pub const DANA: (&str, &str) = ("dana", "Dana-ldap-pw-2Qx");
pub const ERIN: (&str, &str) = ("erin", "Erin-ldap-pw-7Kw");

fn seed() -> String {
    let (dana, dana_pw) = DANA;
    let (erin, erin_pw) = ERIN;
    format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n\n\
         dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: gatehouse\nuserPassword: {SERVICE_PASSWORD}\n\n\
         dn: uid={dana},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {dana}\ncn: Dana Scully\nsn: Scully\nmail: dana@example.org\nuserPassword: {dana_pw}\n\n\
         dn: uid={erin},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {erin}\ncn: Erin Reagan\nsn: Reagan\nuserPassword: {erin_pw}\n\n\
         dn: cn=dbas,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: dbas\nmember: uid={dana},ou=people,{SUFFIX}\n\n\
         dn: cn=ops,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: ops\nmember: cn=dbas,ou=groups,{SUFFIX}\n\n\
         dn: cn=staff,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: staff\nmember: cn=ops,ou=groups,{SUFFIX}\nmember: uid={erin},ou=people,{SUFFIX}\n"
    )
}

pub struct Slapd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub ldaps_port: u16,
    pub ldap_port: u16,
}

impl Slapd {
    pub fn start() -> Slapd {
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-slapd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                "/CN=gatehouse-test-ldap-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            d,
            &[],
        );
        run(
            "openssl",
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
            d,
            &[],
        );
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n",
        )
        .unwrap();
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "30",
                "-extfile",
                "server.ext",
            ],
            d,
            &[],
        );
        std::fs::create_dir(d.join("db")).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\n\
             pidfile {dir}/slapd.pid\n\
             TLSCACertificateFile {dir}/ca.pem\n\
             TLSCertificateFile {dir}/server.pem\n\
             TLSCertificateKeyFile {dir}/server.key\n\
             database mdb\nmaxsize 104857600\nsuffix \"{SUFFIX}\"\nrootdn \"{ADMIN_DN}\"\nrootpw {ADMIN_PASSWORD}\n\
             directory {dir}/db\n\
             access to attrs=userPassword by anonymous auth by self write by * none\n\
             access to * by dn.exact=\"{SERVICE_DN}\" read by self read by * none\n",
            dir = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        std::fs::write(d.join("seed.ldif"), seed()).unwrap();
        run("slapadd", &["-f", "slapd.conf", "-l", "seed.ldif"], d, &[]);
        let mut slapd = Slapd {
            dir,
            child: None,
            ldaps_port: free_port(),
            ldap_port: free_port(),
        };
        slapd.run_server();
        slapd
    }

    fn run_server(&mut self) {
        let d = self.dir.path();
        let urls = format!(
            "ldaps://127.0.0.1:{}/ ldap://127.0.0.1:{}/",
            self.ldaps_port, self.ldap_port
        );
        let child = Command::new("slapd")
            .args(["-f", "slapd.conf", "-h", &urls, "-d", "0"])
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("slapd.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run slapd ({e}): install Debian's slapd"));
        self.child = Some(child);
        let up = poll(Duration::from_secs(20), || {
            (port_open(self.ldaps_port) && port_open(self.ldap_port)).then_some(())
        });
        assert!(up.is_some(), "slapd did not start:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A file holding the gateway's bind password.
    pub fn service_password_file(&self) -> PathBuf {
        let path = self.dir.path().join("bind.pw");
        std::fs::write(&path, format!("{SERVICE_PASSWORD}\n")).unwrap();
        path
    }

    /// `ldapmodify` as the directory's administrator over LDAPS, checking its certificate.
    pub fn modify(&self, ldif: &str) {
        let path = self.dir.path().join("change.ldif");
        std::fs::write(&path, ldif).unwrap();
        let url = format!("ldaps://127.0.0.1:{}", self.ldaps_port);
        let ca = self.ca();
        run(
            "ldapmodify",
            &[
                "-H",
                &url,
                "-x",
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
                "-f",
                path.to_str().unwrap(),
            ],
            self.dir.path(),
            &[("LDAPTLS_CACERT", ca.to_str().unwrap())],
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let stopped = poll(Duration::from_secs(10), || {
            (!port_open(self.ldaps_port)).then_some(())
        });
        assert!(stopped.is_some(), "slapd did not stop");
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run_server();
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
