#!/usr/bin/env python3
"""A real SMTP server for gatehouse-notify's tests, built on aiosmtpd (Debian: python3-aiosmtpd).

Listens on 127.0.0.1 on a port the kernel picks, prints `READY <port>` on stdout once it
accepts connections, and writes each message it accepts to `<outdir>/<n>.json`: the envelope,
the TLS version of the connection, the authenticated login, and the headers and body as
Python's own email parser decodes them. Exits when its standard input closes (the test that
started it ended). Set GATEHOUSE_TEST_SMTP_LOG=1 to see aiosmtpd's log on stderr.

  --security none|starttls|tls   plain; STARTTLS required before MAIL; implicit TLS (SMTPS)
  --cert FILE --key FILE         the server's certificate chain and key (PEM), for TLS
  --auth-user NAME --auth-password-file FILE
                                 require AUTH (PLAIN or LOGIN) with these credentials
"""

import argparse
import asyncio
import email
import email.policy
import json
import logging
import os
import ssl
import sys
import threading
import warnings

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError:
    print("MISSING python3-aiosmtpd", flush=True)
    sys.exit(3)


class Recorder:
    def __init__(self, outdir):
        self.outdir = outdir
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        ssl_object = None
        if server.transport is not None:
            ssl_object = server.transport.get_extra_info("ssl_object")
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        message = email.message_from_bytes(content, policy=email.policy.default)
        body_part = message.get_body(preferencelist=("plain",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": ssl_object.version() if ssl_object is not None else None,
            "login": (
                session.auth_data.login.decode("utf-8")
                if isinstance(session.auth_data, LoginPassword)
                else None
            ),
            "headers": {name: str(value) for name, value in message.items()},
            "content_type": message.get_content_type(),
            "charset": message.get_content_charset(),
            # Lines end in CRLF on the wire; the tests compare text.
            "body": body_part.get_content().replace("\r\n", "\n") if body_part is not None else None,
            "raw": content.decode("utf-8", "replace"),
        }
        self.count += 1
        path = os.path.join(self.outdir, f"{self.count:04}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.rename(path + ".tmp", path)
        return "250 2.0.0 Message accepted"


def make_authenticator(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        if (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user
            and auth_data.password == password
        ):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    return authenticate


def exit_when_stdin_closes():
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--security", choices=["none", "starttls", "tls"], default="none")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--auth-user")
    parser.add_argument("--auth-password-file")
    args = parser.parse_args()

    # Failed handshakes are part of the tests; their tracebacks only with GATEHOUSE_TEST_SMTP_LOG.
    verbose = bool(os.environ.get("GATEHOUSE_TEST_SMTP_LOG"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.CRITICAL)

    context = None
    if args.security != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    options = {"hostname": "mail.test"}
    if args.security == "starttls":
        options["tls_context"] = context
        options["require_starttls"] = True
    if args.auth_user:
        with open(args.auth_password_file, "rb") as f:
            password = f.read()
        options["authenticator"] = make_authenticator(args.auth_user.encode("utf-8"), password)
        options["auth_required"] = True
        # aiosmtpd only counts STARTTLS as TLS; with implicit TLS the connection is encrypted
        # from the start, so its own check must be turned off.
        options["auth_require_tls"] = args.security != "tls"
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")

    recorder = Recorder(args.outdir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(recorder, loop=loop, **options),
        host="127.0.0.1",
        port=0,
        ssl=context if args.security == "tls" else None,
    )
    port = server.sockets[0].getsockname()[1]
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(f"READY {port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
