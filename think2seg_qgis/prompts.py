"""Prompts for re-segmenting: the boxes and points in the prompt layers, edited or drawn by the user,
grouped by instance, in the raster layer's CRS.

An instance takes a box, exactly two points inside the target, or both (the model was trained on
exactly two positive points). The re-segment corrects a run: the newest one, or those whose prompts
are selected in the prompt layers. Its reply *replaces* that run (polygons and prompts) and the
hand-drawn prompts it sent, as one undo step (see :class:`~.undo.AddRunCommand`); drawn prompts
are therefore never sent twice, and the run's old mask never stays beside the new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qgis.core import QgsFeature, QgsFeatureRequest, QgsGeometry, QgsPointXY, QgsRasterLayer, QgsRectangle

from .errors import PromptError
from .results import ROLES, Replaced, ResultStore

DRAWN = "drawn"
POINTS_PER_INSTANCE = 2


@dataclass
class Instance:
    """One instance's prompts: its ``box`` and ``points`` features (of run ``run_id``)."""

    run_id: str
    number: int
    question: str = ""
    box: QgsFeature | None = None
    points: list[QgsFeature] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, int]:
        return (self.run_id, self.number)

    @property
    def drawn(self) -> bool:
        return self.run_id == DRAWN

    @property
    def sendable(self) -> bool:
        return self.box is not None or len(self.points) == POINTS_PER_INSTANCE

    def describe(self) -> str:
        """What the instance holds and, when incomplete, what it needs."""
        name = f"drawn {self.number + 1}" if self.drawn else f"instance {self.number + 1}"
        points = len(self.points)
        parts = (["box"] if self.box is not None else []) + ([f"{points} points"] if points == 2 else [])
        if points not in (0, POINTS_PER_INSTANCE):
            need = "only its box is sent" if self.box is not None else "it cannot be sent yet"
            parts.append(f"{points} of {POINTS_PER_INSTANCE} points: add one more ({need})")
        return f"{name}: " + " + ".join(parts or ["empty"])

    def prompt(self) -> dict:
        """The prompt for the API (points only when exactly two)."""
        prompt = {}
        if self.box is not None:
            bbox = self.box.geometry().boundingBox()
            prompt["box"] = [bbox.xMinimum(), bbox.yMinimum(), bbox.xMaximum(), bbox.yMaximum()]
        if len(self.points) == POINTS_PER_INSTANCE:
            prompt["points"] = [[p.geometry().asPoint().x(), p.geometry().asPoint().y()] for p in self.points]
        return prompt

    def features(self) -> dict[str, list[QgsFeature]]:
        return {"boxes": [self.box] if self.box is not None else [], "points": list(self.points)}


@dataclass
class PromptSet:
    """What a re-segment sends: ``prompts`` (``box`` [xmin, ymin, xmax, ymax] and/or two ``points``
    [[x, y], [x, y]], in map units of the raster's CRS); ``replaced``: the corrected runs' features
    and the drawn prompts sent, which the reply replaces; ``question``: the corrected run's;
    ``incomplete``: the instances that could not be sent, described."""

    prompts: list[dict]
    replaced: Replaced
    question: str = ""
    incomplete: list[str] = field(default_factory=list)


def instances(store: ResultStore, layer: QgsRasterLayer) -> list[Instance]:
    """The instances a re-segment can send: the corrected runs' (see module doc) and the drawn ones."""
    layers = store.find(layer.crs())
    if layers is None:
        return []
    boxes, points = layers["boxes"], layers["points"]
    runs = corrected_runs(boxes, points) | {DRAWN}
    found: dict[tuple[str, int], Instance] = {}
    for feature in boxes.getFeatures(_runs_filter(runs)):
        _instance(found, feature).box = feature
    for feature in points.getFeatures(_runs_filter(runs)):
        instance = _instance(found, feature)
        instance.points = sorted([*instance.points, feature], key=lambda f: f["point"])
    return sorted(found.values(), key=lambda i: (i.drawn, i.run_id, i.number))


def corrected_runs(boxes, points) -> set[str]:  # the prompt layers
    """The runs of the selected prompts, else the newest run (drawn prompts are no run)."""
    chosen = {f["run_id"] for lyr in (boxes, points) for f in lyr.selectedFeatures()} - {DRAWN}
    return chosen or ({_newest_run(boxes, points)} - {""})


def collect(store: ResultStore, layer: QgsRasterLayer, leave_out: set[tuple[str, int]] = frozenset()) -> PromptSet:
    """The prompts of every sendable instance but those in ``leave_out`` (keys the user unticked), and
    what they replace. Instances that cannot be sent (one point, no box) are named in ``incomplete``."""
    everything = instances(store, layer)
    picked = [i for i in everything if i.sendable and i.key not in leave_out]
    replaced = Replaced(layer.crs(), {role: [] for role in ROLES})
    runs = {i.run_id for i in everything if not i.drawn}
    layers = store.find(layer.crs())
    if runs and layers is not None:
        for role in ROLES:
            replaced.features[role] += list(layers[role].getFeatures(_runs_filter(runs)))
    for instance in picked:
        if instance.drawn:
            for role, features in instance.features().items():
                replaced.features[role] += features
    question = next((i.question for i in everything if not i.drawn and i.question), "")
    incomplete = [i.describe() for i in everything if not i.sendable]
    return PromptSet([i.prompt() for i in picked], replaced, question, incomplete)


def require_inside(prompts: list[dict], bounds: QgsRectangle, layer_name: str) -> None:
    """Raise :class:`PromptError` unless every box overlaps ``bounds`` and every point lies in it.

    ``bounds`` is the visible window of the raster (same CRS as the prompts); the backend refuses
    prompts outside the window it reads.
    """
    if any(_flat(prompt) for prompt in prompts):
        raise PromptError("a prompt box has no area: draw boxes by dragging from one corner to the other")
    outside = sum(not _inside(prompt, bounds) for prompt in prompts)
    if outside:
        raise PromptError(
            f"{outside} of the {len(prompts)} prompt(s) to re-segment lie outside the visible part of "
            f"{layer_name}: pan or zoom so that they are visible, or untick them in the Think2Seg panel"
        )


def add_drawn(store: ResultStore, layer: QgsRasterLayer, kind: str, geometry: QgsGeometry) -> Instance:
    """Add a hand-drawn box or point (in the raster's CRS) to the run 'drawn'; returns its instance.

    Each drawn box starts a new instance. A point joins the newest drawn instance while it has fewer
    than two points, and must lie inside its box; otherwise it starts a new instance of its own.
    Raises :class:`PromptError` for a point outside the box and :class:`~.errors.ResultsError` when
    the prompt layer cannot be written.
    """
    layers = store.layers(layer.crs())
    drawn = [i for i in instances(store, layer) if i.drawn]
    newest = drawn[-1] if drawn else None
    if kind == "box" or newest is None or len(newest.points) >= POINTS_PER_INSTANCE:
        number = max((i.number for i in drawn), default=-1) + 1
        instance = Instance(DRAWN, number, "drawn by hand")
    else:
        instance = newest
        if instance.box is not None and not instance.box.geometry().intersects(geometry):
            raise PromptError(
                f"the point is outside the box of drawn {instance.number + 1}: points go inside the target "
                "(draw a new box first for another target)"
            )
    target = layers["boxes" if kind == "box" else "points"]
    feature = QgsFeature(target.fields())
    feature.setGeometry(geometry)
    feature.setAttribute("run_id", DRAWN)
    feature.setAttribute("instance", instance.number)
    feature.setAttribute("question", "drawn by hand")
    if kind == "point":
        feature.setAttribute("point", len(instance.points))
    (added,) = store.write(target, [feature])
    if kind == "box":
        instance.box = added
    else:
        instance.points.append(added)
    return instance


def _instance(found: dict[tuple[str, int], Instance], feature: QgsFeature) -> Instance:
    key = (str(feature["run_id"]), int(feature["instance"] or 0))
    if key not in found:
        found[key] = Instance(key[0], key[1], str(feature["question"] or ""))
    return found[key]


def _flat(prompt: dict) -> bool:
    x1, y1, x2, y2 = prompt.get("box", (0.0, 0.0, 1.0, 1.0))
    return x2 <= x1 or y2 <= y1


def _inside(prompt: dict, bounds: QgsRectangle) -> bool:
    if "box" in prompt:
        overlap = QgsRectangle(*prompt["box"]).intersect(bounds)
        if overlap.isEmpty() or overlap.width() <= 0 or overlap.height() <= 0:
            return False
    return all(bounds.contains(QgsPointXY(x, y)) for x, y in prompt.get("points", []))


def _newest_run(*layers) -> str:
    newest, run = "", ""
    for layer in layers:
        for feature in layer.getFeatures():
            if feature["run_id"] != DRAWN and str(feature["created_at"]) >= newest:
                newest, run = str(feature["created_at"]), feature["run_id"]
    return run


def _runs_filter(runs: set[str]) -> QgsFeatureRequest:
    quoted = ",".join("'" + r.replace("'", "''") + "'" for r in runs if r)
    return QgsFeatureRequest().setFilterExpression(f'"run_id" IN ({quoted})')
