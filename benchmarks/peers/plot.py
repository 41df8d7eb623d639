"""The plot of docs/performance.md (run with the bench venv's python, which has matplotlib):
``plot.py MEDIANS.json OUT.png``, end-to-end jobs/s per system and mode, AMQP at equal
guarantees and at defaults."""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    with open(sys.argv[1]) as f:
        medians = json.load(f)
    rows = [m for m in medians.values() if m["group"] == "amqp" and m["mode"] != "latency"]
    labels = sorted({f"{m['system']} ({m['guarantees']})" for m in rows},
                    key=lambda s: (not s.startswith("rrjobs"), s))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.4
    for offset, mode, title in ((-width / 2, "ptc", "produce, then consume"),
                                (width / 2, "concurrent", "concurrent produce and consume")):
        values = []
        for label in labels:
            found = [m for m in rows if f"{m['system']} ({m['guarantees']})" == label
                     and m["mode"] == mode]
            values.append(found[0]["end_to_end_jobs_per_s"] if found else 0.0)
        ax.bar([i + offset for i in range(len(labels))], values, width, label=title)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=25, ha="right")
    ax.set_ylabel("end-to-end jobs/s (median)")
    ax.set_title("RabbitMQ: rrjobs and its peers, end to end")
    ax.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
