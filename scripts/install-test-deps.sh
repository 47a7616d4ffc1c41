#!/usr/bin/env bash
# Installs the system programs the test suite drives (Debian/Ubuntu). Idempotent.
#   openssh-server  the real sshd used as the target (tests/support: TargetSshd)
#   openssh-client  the real ssh/scp/sftp/ssh-keygen clients
#   asciinema       the real player that must accept exported recordings
#   passwd          useradd/chpasswd for the ghtest_* target accounts
#   sudo            the service account of the credential-lifecycle tests (sudo chpasswd)
#   util-linux      script(1), flock(1); coreutils for sha256sum/timeout
#   python3-aiosmtpd  the real SMTP server the mail tests send to (host/notify/tests/notify)
#   rsyslog, rsyslog-gnutls  the real syslog receiver of the audit stream tests (tests/audit_stream.rs)
#   snmptrapd       the real SNMP notification receiver of the SNMP audit stream tests (tests/audit_stream.rs)
#   slapd, ldap-utils  the real OpenLDAP directory of the directory login tests (tests/directory.rs,
#                   tests/support/slapd.rs): slapd, slapadd, ldapmodify
#   postgresql      the real PostgreSQL server of the store tests (tests/store_conformance.rs,
#                   tests/control_ha.rs, tests/support/postgres.rs: initdb and pg_ctl in a temp
#                   dir, run as the package's unprivileged `postgres` user) and the a2a bench
#   inetutils-telnetd, inetutils-telnet  the real Telnet target (in.telnetd, started per connection
#                   with --exec-login) and the stock telnet client of the Telnet tests (host/telnet/tests,
#                   tests/telnet.rs); inetutils-inetd starts telnetd in the transparent-mode test
#                   (tests/transparent.rs)
#   x11vnc, tigervnc-viewer  the real VNC target (x11vnc on Xvfb, VNC authentication) and the real
#                   VeNCrypt viewer (xtigervncviewer, X509Plain) of the VNC tests (host/vnc/tests)
#   iptables        the router's REDIRECT, TPROXY and ip6tables rules of the transparent-mode tests (tests/transparent.rs,
#                   network namespaces made with iproute2's `ip netns`)
#   rsync           the real rsync the full-duplex tests copy trees with (tests/ssh_full_duplex.rs)
#   openapi-spec-validator (pip, for the python3 on PATH)  validates the API's OpenAPI document
#   freerdp2-x11    xfreerdp, the real RDP client (host/rdp/tests: +auth-only and full sessions)
#   freerdp2-shadow-x11  freerdp-shadow-cli, the real NLA-only RDP target (/sec:nla /sam-file:)
#   winpr-utils     winpr-hash, which writes the target's SAM file (NT hash of the account)
#   xvfb, xauth, xfonts-base  Xvfb (and what it recommends), the virtual displays the RDP client and the shadow target run on
#   xdotool         moves the client window on the target's display so that frames flow, types into the client
#   x11-xserver-utils  xsetroot, which paints a known pattern on the target's screen (RDP recording tests)
#   ffmpeg          renders RDP recordings to WebM/MP4/PNG (host/rdp-replay export) and reads them back in tests
#   xterm, iproute2 the RDP benchmark (host/bench/benches/rdp.rs): text scrolling on the target's display; ss for socket byte counts
#   build-essential, pkg-config, cmake, clang: C toolchain for crates with native code
#   ca-certificates, git: general build prerequisites
#   curl, openssl   raw HTTPS requests to the API and client certificates for the A2A tests
#   chromium        Debian's browser, driven by playwright-core (npm) in the player's browser test
#                   (tests/player.rs, tests/browser/); Node.js 20+ and npm come with the machine
#                   image (nodejs and npm from Debian otherwise, whose Node.js may be too old: the
#                   test then says so)
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends \
    openssh-server openssh-client asciinema passwd sudo util-linux coreutils procps \
    python3-aiosmtpd \
    freerdp2-x11 freerdp2-shadow-x11 winpr-utils xvfb xauth xfonts-base xdotool \
    x11-xserver-utils ffmpeg xterm iproute2 rsync \
    build-essential pkg-config cmake clang \
    ca-certificates git \
    curl openssl chromium \
    rsyslog rsyslog-gnutls snmptrapd slapd ldap-utils postgresql \
    inetutils-telnetd inetutils-telnet inetutils-inetd x11vnc tigervnc-viewer iptables

# A standard OpenAPI validator for the API's document (tests/requests.rs); Debian has no package.
if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
    python3 -m pip install --quiet openapi-spec-validator \
        || python3 -m pip install --quiet --break-system-packages openapi-spec-validator
fi

# Privilege-separation directory sshd insists on (the package's init script would create it).
$SUDO mkdir -p /run/sshd
$SUDO chmod 0755 /run/sshd

# The browser test's node packages (tests/browser/package-lock.json; about 2 s, 14 MB).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    $SUDO apt-get install -y -q --no-install-recommends nodejs npm
fi
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
(cd "$repo_root/tests/browser" && npm ci --no-audit --no-fund)
