"""Side-by-side table of a bench/run.sh result file (JSON lines), with ratios to the best of
the other servers."""

import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip().startswith("{")]
servers = []
for r in rows:
    if r.get("server") not in servers:
        servers.append(r["server"])

logins = {r["server"]: r for r in rows if r.get("scenario") == "login"}
chats = {}
rooms = {}
for r in rows:
    if r.get("scenario") == "chat" and "rate_target" in r:
        chats.setdefault(r["server"], []).append(r)
    if r.get("scenario") == "rooms" and "rate_target" in r:
        rooms.setdefault(r["server"], []).append(r)


def best_sustained(steps, p99_ms=50.0):
    ok = [s for s in steps if s["lost"] == 0 and s["errors"] == 0 and s["p99_ms"] <= p99_ms]
    return max(ok, key=lambda s: s["rate_delivered"]) if ok else None


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    return f"{v:,.1f}{unit}" if isinstance(v, float) else f"{v}{unit}"


print()
print("| measure | " + " | ".join(servers) + " |")
print("|---|" + "---|" * len(servers))


def line(label, values, better="high"):
    cells = [fmt(values.get(s)) for s in servers]
    c = values.get("causette")
    others = [values[s] for s in servers if s != "causette" and values.get(s) is not None]
    if c is not None and others:
        best = max(others) if better == "high" else min(others)
        if best:
            ratio = c / best if better == "high" else best / c if c else None
            if ratio is not None:
                cells[servers.index("causette")] += f" ({ratio:.2f}x)"
    print(f"| {label} | " + " | ".join(cells) + " |")


line("KB per idle connection", {s: logins[s].get("kb_per_connection") for s in logins}, "low")
line("logins/s", {s: logins[s].get("logins_per_s") for s in logins})
line("login errors", {s: logins[s].get("errors") for s in logins}, "low")
sustained = {s: best_sustained(chats.get(s, [])) for s in servers}
line("1:1 msgs/s sustained (p99<50ms, no loss)", {s: (v["rate_delivered"] if v else None) for s, v in sustained.items()})
line("p99 ms at that rate", {s: (v["p99_ms"] if v else None) for s, v in sustained.items()}, "low")
line("server CPU us per message at that rate", {s: (v["server_cpu_us_per_msg"] if v else None) for s, v in sustained.items()}, "low")
fanout = {s: best_sustained(rooms.get(s, []), p99_ms=100.0) for s in servers}
if any(fanout.values()):
    line("room deliveries/s sustained (p99<100ms, no loss)", {s: (v["rate_delivered"] if v else None) for s, v in fanout.items()})
    line("p99 ms at that rate (rooms)", {s: (v["p99_ms"] if v else None) for s, v in fanout.items()}, "low")
print()
print("mechanisms: " + ", ".join(f"{s}={logins[s].get('mechanism')}" for s in logins)
      + "; TLS: " + ", ".join(f"{s}={logins[s].get('tls')}" for s in logins))
for s in servers:
    for step in chats.get(s, []):
        print(f"  {s} @ {step['rate_target']}/s: delivered {step['rate_delivered']:.0f}/s, "
              f"lost {step['lost']}, p50 {step['p50_ms']:.2f} ms, p99 {step['p99_ms']:.2f} ms, "
              f"max {step['max_ms']:.1f} ms, cpu/msg {fmt(step.get('server_cpu_us_per_msg'))} us")
for s in servers:
    for step in rooms.get(s, []):
        print(f"  {s} rooms {step['rooms']}x{step['occupants']} @ {step['rate_target']} sent/s: "
              f"delivered {step['rate_delivered']:.0f}/s, lost {step['lost']}, "
              f"p50 {step['p50_ms']:.2f} ms, p99 {step['p99_ms']:.2f} ms, max {step['max_ms']:.1f} ms, "
              f"cpu/delivery {fmt(step.get('server_cpu_us_per_msg'))} us")
