"""The Markdown table printed at the end of an evaluation, and the report's notes."""

from __future__ import annotations

# Where each layout takes a sample's class from, for the note when no sample has one.
CLASS_SOURCES = {
    "earthreason": 'a "class" key in each QAs/*.json; the released QA files may lack it',
    "rrsisd": "the categories of instances.json",
    "refsegrs": "nowhere: RefSegRS has no classes",
    "folder": 'a "class" field in the entries of samples.json',
}


def notes(report: dict) -> list[str]:
    """What a reader of the numbers must know: here, a per-class breakdown that is empty, and why."""
    if report["metrics"].get("per_class") or not report["metrics"].get("samples"):
        return []
    source = CLASS_SOURCES.get(report["dataset"], "the dataset")
    return [f"no per-class results: no sample has a class (taken from {source})"]


def markdown(report: dict) -> str:
    metrics = report["metrics"]
    lines = [
        f"**{report['dataset']} {report['split']}**, protocol {report['protocol']}, {metrics['samples']} samples, {report['model']}",
        "",
        "| gIoU | cIoU | P@0.5 | P@0.6 | P@0.7 | P@0.8 | P@0.9 | parse failures | tokens | s/sample |",
        "|---|---|---|---|---|---|---|---|---|---|",
        _row(metrics),
    ]
    if metrics.get("per_class"):
        lines += ["", "| class | samples | gIoU | cIoU | P@0.5 |", "|---|---|---|---|---|"]
        for name, values in metrics["per_class"].items():
            lines.append(
                f"| {name} | {values['samples']} | {_pct(values['giou'])} | {_pct(values['ciou'])} | {_pct(values['precision']['0.5'])} |"
            )
    lines += [f"\nNote: {note}" for note in report.get("notes", [])]
    return "\n".join(lines)


def _row(m: dict) -> str:
    precision = " | ".join(_pct(m["precision"][t]) for t in ("0.5", "0.6", "0.7", "0.8", "0.9"))
    return (
        f"| {_pct(m['giou'])} | {_pct(m['ciou'])} | {precision} | {_pct(m['parse_failure_rate'])} | "
        f"{m['mean_new_tokens']:.0f} | {m['seconds_per_sample']:.2f} |"
    )


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"
