"""Drives `qbox run -it` on a pseudo-terminal, as a person at a terminal would.

Usage: tty_session.py QBOX IMAGE

The terminal starts at 33x101; once the container has printed its size, the
terminal is resized to 40x120 and a line is typed. Prints one JSON object:
the sizes the container saw, whether the host terminal was raw while the
container ran, qbox's exit code, and whether the terminal was restored.
"""

import fcntl
import json
import os
import pty
import select
import struct
import sys
import termios
import time

QBOX, IMAGE = sys.argv[1:3]
# The test's own label on the container, so it counts only its own leftovers.
LABEL = sys.argv[3] if len(sys.argv) > 3 else "qbox-test"
# Engines before API 1.42 learn the size by a resize right after start, so
# the first command may run before it: wait for it, as a shell prompt would.
# After the line is typed, the new size gets up to ten seconds to arrive (a
# loaded machine); if it never does, the old one is printed and the check fails.
INNER = ("until stty size 2>/dev/null | grep -q '^[1-9]'; do sleep 1; done; stty size; read line; "
         "n=0; while [ \"$(stty size)\" != '40 120' ] && [ $n -lt 10 ]; do sleep 1; n=$((n+1)); done; "
         "stty size; echo got:$line")
OUTER = '"$0" run -it --label "$3" "$1" -- sh -c "$2"; echo "qbox-exit:$?"; stty -a; echo end-of-session'


def set_size(fd, rows, columns):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


pid, master = pty.fork()
if pid == 0:
    set_size(0, 33, 101)
    os.execvp("sh", ["sh", "-c", OUTER, QBOX, IMAGE, INNER, LABEL])

output = b""


def read_until(token, timeout=60):
    global output
    deadline = time.time() + timeout
    while token not in output:
        ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.time()))
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    if token not in output:
        print(json.dumps({"error": f"never saw {token!r}", "output": output.decode(errors="replace")}))
        sys.exit(1)


read_until(b"33 101")
lflag = termios.tcgetattr(master)[3]
raw_during = not (lflag & termios.ICANON) and not (lflag & termios.ECHO)
set_size(master, 40, 120)  # the kernel signals SIGWINCH to qbox
# No pause for qbox to pass the size on through the engine's API: after the
# line, the container itself waits (up to ten seconds) for the new size.
os.write(master, b"hello\r")
read_until(b"got:hello")
read_until(b"end-of-session")
os.waitpid(pid, 0)

text = output.decode(errors="replace")
after = text.split("qbox-exit:", 1)[1]
print(json.dumps({
    "sizes": [s for s in ("33 101", "40 120") if s in text],
    "raw_during": raw_during,
    "qbox_exit": int(after.split()[0]),
    "restored": " icanon" in after and "-icanon" not in after and " echo " in after,
    "output": text,
}))
