#!/usr/bin/env python3
"""Writes the checked-in seed corpora under fuzz/seeds/<target>/: a few valid inputs per target,
in each target's input format (see the comment at the top of each fuzz_targets/*.rs). The RDP
seeds are cut from host/rdp-replay/tests/fixtures/checkerboard-typing.pdus, a recording of a real
FreeRDP session through the gateway's relay. Run from anywhere: python3 fuzz/make-seeds.py"""

import os
import shutil
import struct

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)
SEEDS = os.path.join(FUZZ, "seeds")
FIXTURE = os.path.join(ROOT, "host/rdp-replay/tests/fixtures/checkerboard-typing.pdus")


def write(target, name, data):
    directory = os.path.join(SEEDS, target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def records(items):
    """[(kind, bytes)] as [kind][length u16 BE][bytes] records (fuzz_targets/common/stream.rs)."""
    out = b""
    for kind, data in items:
        out += bytes([kind]) + struct.pack(">H", len(data)) + data
    return out


def ssh_string(data):
    if isinstance(data, str):
        data = data.encode()
    return struct.pack(">I", len(data)) + data


def login():
    for i, name in enumerate([
        "alice@root@db1",
        "otp=123456@alice@root@db1",
        "ticket=CHG-1@reason=a b@alice@root@db1",
        "alice@root",
        "al ice@root@db1",
    ]):
        write("login", f"seed-{i}", name)


def cast():
    header = '{"version":2,"width":80,"height":24,"timestamp":1700000000,"env":{"TERM":"xterm-256color"}}\n'
    events = [
        '[0.000000, "o", "$ "]\n',
        '[0.512000, "i", "ls\\r"]\n',
        '[0.530000, "o", "\\u001b[01;34mdir\\u001b[0m\\r\\nfile\\r\\n"]\n',
        '[1.000000, "r", "120x40"]\n',
        '[2.250000, "m", "sudo"]\n',
    ]
    write("cast_reader", "session", header + "".join(events))
    write("cast_reader", "cut-short", header + "".join(events[:2]) + '[0.6, "o", "tr')
    write("cast_reader", "exec", '{"version":2,"width":0,"height":0,"command":"uptime","idle_time_limit":2.5}\n'
          '[0.1, "o", " 10:00:00 up 1 day\\n"]\n')


def scp():
    upload = records([
        (0, b"C0644 5 notes.txt\n"), (1, b"\0"), (0, b"hello"), (0, b"\0"),
        (0, b"D0755 0 dir\n"), (0, b"T1700000000 0 1700000000 0\nC0600 3 a\nabc\0"), (0, b"E\n"),
    ])
    write("scp_inspector", "upload", b"scp -r -t /srv/data\n\x03" + upload)
    download = records([(0, b"\0"), (1, b"C0644 11 hosts\nlocalhost\n\n\0"), (1, b"\x01scp: warning\n")])
    write("scp_inspector", "download", b"scp -f /etc/hosts '/etc/my file'\n\x07" + download)


def sftp_packet(kind, body):
    return struct.pack(">IB", len(body) + 1, kind) + body


def sftp():
    u32 = lambda n: struct.pack(">I", n)
    u64 = lambda n: struct.pack(">Q", n)
    init = (0, sftp_packet(1, u32(3)))
    version = (1, sftp_packet(2, u32(3)))
    handle = ssh_string(b"h1")
    write_open = (0, sftp_packet(3, u32(1) + ssh_string("/tmp/up.bin") + u32(0x1a) + u32(0)))
    got_handle = (1, sftp_packet(102, u32(1) + handle))
    data = b"x" * 40
    write_data = (0, sftp_packet(6, u32(2) + handle + u64(0) + ssh_string(data)))
    status = (1, sftp_packet(101, u32(2) + u32(0) + ssh_string("") + ssh_string("")))
    close = (0, sftp_packet(4, u32(3) + handle))
    write("sftp_inspector", "upload", b"\x05" + records([init, version, write_open, got_handle, write_data, status, close, status]))
    read_open = (0, sftp_packet(3, u32(7) + ssh_string("/etc/hosts") + u32(1) + u32(0)))
    read_handle = (1, sftp_packet(102, u32(7) + handle))
    read = (0, sftp_packet(5, u32(8) + handle + u64(0) + u32(32768)))
    data_reply = (1, sftp_packet(103, u32(8) + ssh_string(b"127.0.0.1 localhost\n")))
    write("sftp_inspector", "download", b"\x00" + records([init, version, read_open, read_handle, read, data_reply, close]))
    ops = [
        (0, sftp_packet(13, u32(20) + ssh_string("/tmp/old"))),
        (0, sftp_packet(14, u32(21) + ssh_string("/tmp/new-dir") + u32(0))),
        (0, sftp_packet(15, u32(22) + ssh_string("/tmp/new-dir"))),
        (0, sftp_packet(18, u32(23) + ssh_string("/tmp/a") + ssh_string("/tmp/b"))),
        (0, sftp_packet(200, u32(24) + ssh_string("posix-rename@openssh.com") + ssh_string("/tmp/b") + ssh_string("/tmp/c"))),
        (0, sftp_packet(9, u32(25) + ssh_string("/tmp/c") + u32(0))),
    ]
    write("sftp_inspector", "operations", b"\x0f" + records([init, version] + ops))


def pdus():
    """The fixture's PDUs: (direction, framing, micros, bytes)."""
    with open(FIXTURE, "rb") as f:
        data = f.read()
    assert data[:8] == b"GHRDP1\n\0"
    offset, out = 8, []
    while offset < len(data):
        direction, framing, micros, length = struct.unpack_from("<BBQI", data, offset)
        offset += 14
        out.append((direction, framing, micros, data[offset:offset + length]))
        offset += length
    return data, out


def rdp():
    data, all_pdus = pdus()
    write("rdp_recording", "checkerboard-typing", data[8:])
    # The first PDUs only: an activation, no graphics.
    first = b"".join(struct.pack("<BBQI", d, f, t, len(b)) + b for d, f, t, b in all_pdus[:12])
    write("rdp_recording", "connection-start", first)
    client = [b for d, f, _, b in all_pdus if d == 0 and f == 0]
    # The relay recorded the fixed-up Connect Initial, the rewritten Client Info and the steered
    # Confirm Active: the inspection target gets each with steering on and off.
    for i, pdu in enumerate(client[:8]):
        write("rdp_inspect", f"client-{i}-steer", bytes([0b011]) + pdu)
        write("rdp_inspect", f"client-{i}", bytes([0b000]) + pdu)
    # Framing: client traffic as it comes, in reads of several sizes.
    stream = b"".join(b for d, _, _, b in all_pdus if d == 0)
    write("rdp_framing", "client-stream", bytes([0b00100000]) + stream)
    target = b"".join(b for d, _, _, b in all_pdus if d == 1)[:16384]
    write("rdp_framing", "target-stream", bytes([0b11100001]) + target)
    request = bytes.fromhex("030000130ee000000000000100080003000000")
    cookie = b"Cookie: mstshash=alice\r\n"
    x224 = bytes([0x0e + len(cookie) - 8 + 8, 0xe0, 0, 0, 0, 0, 0]) + cookie + bytes.fromhex("010008000b000000")
    write("rdp_framing", "connection-request", bytes([0]) + request)
    write("rdp_framing", "connection-request-cookie", bytes([0x40]) + bytes([3, 0]) + struct.pack(">H", 4 + len(x224)) + x224)
    write("rdp_framing", "tsrequest", bytes([2]) + bytes.fromhex("3010a003020106a109300730 05a0030401 00".replace(" ", "")))
    write("rdp_framing", "early-auth-result", bytes([3]) + b"\x01\x00\x00\x00")


def plugin():
    # Unstructured input: any bytes decode to a verdict; a few hand-picked shapes.
    write("plugin_answers", "accept", bytes([0, 1, 3, 10, 1, 1, 0, 2, 5, 0, 0]) + b"alice-renamed" * 2)
    write("plugin_answers", "deny", bytes([1, 2, 0xff, 0x04, 1]) + b"no")
    write("plugin_answers", "need-info", bytes([2, 0, 3, 0, 1, 3, 8]) + b"otp code" + bytes([1]))


def ssh():
    def request(kind, want, fields=b""):
        return ssh_string(kind) + bytes([want]) + fields
    u32 = lambda n: struct.pack(">I", n)
    pty = request("pty-req", 1, ssh_string("xterm-256color") + u32(80) + u32(24) + u32(640) + u32(480)
                  + ssh_string(bytes([1]) + u32(3) + bytes([128]) + u32(38400) + bytes([200]) + u32(1) + bytes([0])))
    env = request("env", 1, ssh_string("LANG") + ssh_string("C.UTF-8"))
    env_refused = request("env", 1, ssh_string("LD_PRELOAD") + ssh_string("/tmp/x.so"))
    shell = request("shell", 1)
    exec_ = request("exec", 1, ssh_string("scp -t /tmp"))
    subsystem = request("subsystem", 1, ssh_string("sftp"))
    window = request("window-change", 0, u32(120) + u32(40) + u32(0) + u32(0))
    signal = request("signal", 0, ssh_string("INT"))
    x11 = request("x11-req", 1, bytes([0]) + ssh_string("MIT-MAGIC-COOKIE-1") + ssh_string("00" * 16) + u32(0))
    agent = request("auth-agent-req@openssh.com", 1)
    unknown = request("keepalive@openssh.com", 1)
    write("ssh_channel_requests", "shell", records([(0, pty), (0, env), (0, env_refused), (0, shell), (0, window), (0, signal)]))
    write("ssh_channel_requests", "exec", records([(0, env), (0, exec_)]))
    write("ssh_channel_requests", "subsystem", records([(0, x11), (0, agent), (0, unknown), (0, subsystem)]))
    forward = bytes([80]) + ssh_string("tcpip-forward") + bytes([1]) + ssh_string("127.0.0.1") + u32(8080)
    direct = bytes([90]) + ssh_string("direct-tcpip") + u32(5) + u32(1 << 20) + u32(32768) + ssh_string("db1") + u32(5432) + ssh_string("127.0.0.1") + u32(40000)
    data = bytes([94]) + u32(0) + ssh_string("ls\n")
    write("ssh_channel_requests", "raw", records([(0, pty), (1, forward), (1, direct), (1, data), (0, shell)]))
    write("ssh_channel_requests", "malformed-pty", records([(0, pty[:-3]), (0, shell)]))


if __name__ == "__main__":
    shutil.rmtree(SEEDS, ignore_errors=True)
    login(); cast(); scp(); sftp(); rdp(); plugin(); ssh()
    for target in sorted(os.listdir(SEEDS)):
        files = os.listdir(os.path.join(SEEDS, target))
        size = sum(os.path.getsize(os.path.join(SEEDS, target, f)) for f in files)
        print(f"{target}: {len(files)} seeds, {size} bytes")
