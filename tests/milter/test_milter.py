#!/usr/bin/python3
"""A milter for sluice's tests, built on libmilter (Debian's python3-milter),
so sluice's client is checked against the reference implementation of the
filter side of the protocol.

    test_milter.py SOCKET SCRIPT LOG

SOCKET is libmilter's form (inet:PORT@127.0.0.1 or unix:/path). SCRIPT is a
JSON file saying what to answer; it is read again for every SMTP
connection, so a test can change it between sessions. LOG gets one JSON
object per event seen (with the macros the script asks to record), flushed
at once, so the test reads what the milter saw.

Script keys (all optional):
  "reply":    {stage: action} for stage in connect, helo, mail, rcpt, data,
              header, eoh, body, eom, unknown. An action is "continue",
              "accept", "reject", "tempfail", "discard", or
              ["reply", code, xcode, line, more lines...] (smfi_setmlreply).
  "rcpt":     {address: action}: per-recipient answers (over "reply.rcpt").
  "hang":     {stage: seconds}: sleep that long before answering (a milter
              that never answers, for the client's timeouts).
  "edits":    end-of-message requests, in order:
              ["addheader", name, value], ["insheader", index, name, value],
              ["chgheader", name, index, value] ("" deletes),
              ["chgfrom", address, esmtp-args-or-null],
              ["addrcpt", address, esmtp-args-or-null], ["delrcpt", address],
              ["replacebody", text], ["replacebody_repeat", line, count],
              ["quarantine", reason]
  "protocol": protocol step names to ask for (P_NR_HDR, P_RCPT_REJ,
              P_HDR_LEADSPC, P_NOBODY, P_SKIP, ...).
  "symlist":  {stage: [macro names]}: the milter's own macro lists
              (stage: connect, helo, mail, rcpt, data, eoh, eom).
  "macros":   {stage: [macro names]}: macros to record in the log.
"""

import json
import sys
import threading
import time

import Milter

SOCKET, SCRIPT, LOG = sys.argv[1:4]
LOCK = threading.Lock()

STAGES = {
    "connect": Milter.M_CONNECT,
    "helo": Milter.M_HELO,
    "mail": Milter.M_ENVFROM,
    "rcpt": Milter.M_ENVRCPT,
    "data": Milter.M_DATA,
    "eoh": Milter.M_EOH,
    "eom": Milter.M_EOM,
}


def log(event, **fields):
    fields["event"] = event
    line = json.dumps(fields)
    with LOCK:
        with open(LOG, "a") as f:
            f.write(line + "\n")


def text(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


class TestMilter(Milter.Base):
    def __init__(self):
        with open(SCRIPT) as f:
            self.script = json.load(f)
        self.body_bytes = 0

    def negotiate(self, opts):
        actions, offered, _, _ = opts
        wanted = 0
        for name in self.script.get("protocol", []):
            wanted |= getattr(Milter, name)
        for stage, names in self.script.get("symlist", {}).items():
            # Milter.Base.setsymlist passes bytes where libmilter's binding
            # wants str (python3-milter 1.0.5): call the binding directly.
            self._ctx.setsymlist(STAGES[stage], " ".join(names))
        opts[1] = offered & wanted
        opts[2] = 0
        opts[3] = 0
        log("negotiate", actions=actions, offered=offered, asked=opts[1])
        return Milter.CONTINUE

    def macros(self, stage):
        return {n: self.getsymval(n) for n in self.script.get("macros", {}).get(stage, [])}

    def answer(self, stage, override=None):
        hang = self.script.get("hang", {}).get(stage)
        if hang:
            time.sleep(hang)
        action = override or self.script.get("reply", {}).get(stage, "continue")
        if isinstance(action, list) and action[0] == "reply":
            self.setreply(*action[1:])
            return Milter.REJECT if action[1].startswith("5") else Milter.TEMPFAIL
        return {
            "continue": Milter.CONTINUE,
            "accept": Milter.ACCEPT,
            "reject": Milter.REJECT,
            "tempfail": Milter.TEMPFAIL,
            "discard": Milter.DISCARD,
            "skip": Milter.SKIP,
        }[action]

    def connect(self, hostname, family, hostaddr):
        log("connect", hostname=hostname, addr=list(hostaddr) if isinstance(hostaddr, tuple) else hostaddr,
            macros=self.macros("connect"))
        return self.answer("connect")

    def hello(self, name):
        log("helo", name=name, macros=self.macros("helo"))
        return self.answer("helo")

    def envfrom(self, sender, *args):
        log("mail", sender=text(sender), args=[text(a) for a in args], macros=self.macros("mail"))
        return self.answer("mail")

    def envrcpt(self, rcpt, *args):
        rcpt, args = text(rcpt), [text(a) for a in args]
        log("rcpt", rcpt=rcpt, args=args, macros=self.macros("rcpt"))
        addr = rcpt.strip("<>")
        return self.answer("rcpt", self.script.get("rcpt", {}).get(addr))

    def data(self):
        log("data", macros=self.macros("data"))
        return self.answer("data")

    def header(self, name, value):
        log("header", name=text(name), value=text(value))
        if "P_NR_HDR" in self.script.get("protocol", []):
            return Milter.NOREPLY
        return self.answer("header")

    def eoh(self):
        log("eoh", macros=self.macros("eoh"))
        return self.answer("eoh")

    def body(self, chunk):
        self.body_bytes += len(chunk)
        if self.body_bytes <= 65536:
            log("body", size=len(chunk), text=text(chunk))
        else:
            log("body", size=len(chunk))
        if "P_NR_BODY" in self.script.get("protocol", []):
            return Milter.NOREPLY
        return self.answer("body")

    def eom(self):
        log("eom", body_bytes=self.body_bytes, macros=self.macros("eom"))
        self.body_bytes = 0
        for edit in self.script.get("edits", []):
            op, args = edit[0], edit[1:]
            if op == "addheader":
                self.addheader(args[0], args[1])
            elif op == "insheader":
                self.addheader(args[1], args[2], args[0])
            elif op == "chgheader":
                self.chgheader(args[0], args[1], args[2])
            elif op == "chgfrom":
                self.chgfrom(args[0], args[1])
            elif op == "addrcpt":
                self.addrcpt(args[0], args[1])
            elif op == "delrcpt":
                self.delrcpt(args[0])
            elif op == "replacebody":
                self.replacebody(args[0].encode())
            elif op == "replacebody_repeat":
                piece = args[0].encode() * max(1, 65536 // len(args[0]))
                per_piece = len(piece) // len(args[0])
                left = args[1]
                while left > 0:
                    n = min(left, per_piece)
                    self.replacebody(piece[: n * len(args[0])])
                    left -= n
            elif op == "quarantine":
                self.quarantine(args[0])
        return self.answer("eom")

    def abort(self):
        log("abort")
        return Milter.CONTINUE

    def unknown(self, cmd):
        log("unknown", cmd=text(cmd))
        return self.answer("unknown")

    def close(self):
        log("close")
        return Milter.CONTINUE


def main():
    Milter.factory = TestMilter
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGBODY | Milter.ADDRCPT | Milter.ADDRCPT_PAR | Milter.DELRCPT
                     | Milter.CHGHDRS | Milter.QUARANTINE | Milter.CHGFROM | Milter.SETSYMLIST)
    log("start")
    Milter.runmilter("sluice-test", SOCKET, 600)


if __name__ == "__main__":
    main()
