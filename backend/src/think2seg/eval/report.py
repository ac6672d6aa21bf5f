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
    """What a reader of the numbers must know: samples that failed, and a per-class breakdown that
    is empty, and why."""
    metrics, found = report["metrics"], []
    if metrics.get("failed"):
        first = report["failed"][0]
        found.append(
            f"{metrics['failed']} sample(s) failed and scored IoU 0 (first: {first['sample_id']}: {first['error']}); "
            "see 'failed' in the report, fix the cause and run again with --retry-failed"
        )
    if metrics.get("samples") and not metrics.get("per_class"):
        source = CLASS_SOURCES.get(report["dataset"], "the dataset")
        found.append(f"no per-class results: no sample has a class (taken from {source})")
    return found


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
