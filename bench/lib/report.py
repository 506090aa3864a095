#!/usr/bin/env python3
"""Turn the RESULT/REFERENCE lines of N runs of one scenario into its section of RESULTS.md.

Input lines (as collected by bench/run, prefixed with the run number):
    <run> REFERENCE <tool> <description...>
    <run> RESULT <metric> <tool> <value> <unit>
The section between <!-- scenario:NAME --> and <!-- /scenario:NAME --> is replaced (or
appended); every other part of the file is left as it is.
"""
import argparse, datetime, os, platform, re, statistics, subprocess, sys

SUBJECT = "hoodyd"
HEADER = """# hoodyd benchmark results

Benchmarks of hoodyd run **side by side with reference tools** on the same machine, in the same
run, the same way. Each figure is the **median** of several runs (never the fastest run: these
VMs vary from run to run); the ratio column is hoodyd / reference, so read it together with the
"better" column (for req/s higher is better, for latencies and durations lower is better).

Reproduce a section with `bench/run <scenario>` (`bench/run --list` lists them; see
`bench/README.md`). Each section records its exact command, date, machine and number of runs.
"""


def machine():
    """The facts that make figures comparable: cores, CPU model, memory, kernel."""
    cpus = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)
                break
    return cpus, model, mem, platform.release()


def better(unit):
    """Throughput units (…/s) are better higher; times (ms, s, …) are better lower."""
    return "higher" if unit.endswith("/s") else "lower"


def fmt(v):
    if v is None:
        return "—"
    if abs(v) >= 100:
        return "{:,.0f}".format(v)
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.2f" % v


def section(a, lines):
    refs, order, vals, units = {}, [], {}, {}
    for line in lines:
        p = line.split()
        if len(p) >= 3 and p[1] == "REFERENCE":
            refs.setdefault(p[2], " ".join(p[3:]))
        elif len(p) >= 6 and p[1] == "RESULT":
            metric, tool, unit = p[2], p[3], " ".join(p[5:])
            try:
                value = float(p[4])
            except ValueError:
                sys.exit("report.py: not a number in: " + line.strip())
            if metric not in order:
                order.append(metric)
            vals.setdefault((metric, tool), []).append(value)
            units.setdefault(metric, unit)
    if not order:
        sys.exit("report.py: the scenario printed no RESULT lines")
    tools = sorted({t for (_, t) in vals if t != SUBJECT})
    # Tools the scenario declared as references get a ratio column; if it declared none,
    # every tool other than hoodyd is a reference.
    reference = [t for t in tools if t in refs] or tools
    for key, v in vals.items():  # a metric missing from some runs would bias the median
        if len(v) != a.runs:
            print("report.py: warning: %s/%s has %d values for %d runs" % (*key, len(v), a.runs),
                  file=sys.stderr)
    med = {k: statistics.median(v) for k, v in vals.items()}

    cpus, model, mem, kernel = machine()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = ["<!-- scenario:%s -->" % a.scenario, "## %s" % a.scenario, "",
           "- command: `%s`" % a.command,
           "- date: %s" % now,
           "- machine: %s CPUs (`nproc`), %s, %s RAM, kernel %s" % (cpus, model, mem, kernel),
           "- runs: %d (figures are medians)" % a.runs]
    for t in reference:
        out.append("- reference: %s" % " ".join(filter(None, [t, refs.get(t)])))
    out += ["", "| metric | unit | better | %s | %s | %s |" % (
        SUBJECT, " | ".join(tools), " | ".join("%s/%s" % (SUBJECT, t) for t in reference)),
        "|---" * (4 + len(tools) + len(reference)) + "|"]
    for m in order:
        h = med.get((m, SUBJECT))
        row = [m, units[m], better(units[m]), fmt(h)] + [fmt(med.get((m, t))) for t in tools]
        for t in reference:
            r = med.get((m, t))
            row.append("%.3g×" % (h / r) if h is not None and r else "—")
        out.append("| " + " | ".join(row) + " |")
    # The individual runs, so a reader can judge the spread behind each median.
    out += ["", "<details><summary>values of every run</summary>", ""]
    for m in order:
        for t in [SUBJECT] + tools:
            if (m, t) in vals:
                out.append("- %s %s: %s %s" % (m, t, ", ".join(fmt(v) for v in vals[(m, t)]),
                                                units[m]))
    out += ["", "</details>", "<!-- /scenario:%s -->" % a.scenario]
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    for k in ("--scenario", "--command", "--lines", "--results"):
        ap.add_argument(k, required=True)
    ap.add_argument("--runs", type=int, required=True)
    a = ap.parse_args()
    with open(a.lines) as f:
        new = section(a, f.readlines())

    text = open(a.results).read() if os.path.exists(a.results) else ""
    if not text.startswith("# "):  # a fresh file gets the explanation at the top
        text = HEADER + ("\n" + text if text else "")
    begin, end = "<!-- scenario:%s -->" % a.scenario, "<!-- /scenario:%s -->" % a.scenario
    pat = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pat.search(text):
        text = pat.sub(lambda _: new, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + new
    tmp = a.results + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, a.results)  # never leave a half-written RESULTS.md behind


if __name__ == "__main__":
    main()
