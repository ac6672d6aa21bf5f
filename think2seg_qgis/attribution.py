"""The provider's attribution, kept on the results it is derived from.

Polygons segmented from a web layer (an XYZ, WMS or WMTS service) are derived from its imagery, so
the results layer they are saved in carries the source's terms: its attribution (Layer Properties >
QGIS Server > Attribution, or what the provider says) and its metadata rights. A results layer
collects the runs of every raster in its CRS, so it keeps one credit per source layer (in the custom
property :data:`CREDITS_KEY`, JSON ``{layer name: credit}``) and shows them all: as its attribution,
as its metadata rights, and in its metadata abstract. Credits stay when a run is undone: the layer's
history used the source.
"""

from __future__ import annotations

import json

from qgis.core import QgsMapLayer, QgsProject, QgsVectorLayer

CREDITS_KEY = "think2seg/attribution"
ABSTRACT_HEAD = "Think2Seg polygons derived from:"


def source_credit(layer: QgsMapLayer) -> str:
    """The source's attribution and metadata rights (the layer's, else its provider's) as one line;
    '' when it states none."""
    rights = list(layer.metadata().rights())
    provider = layer.dataProvider()
    if not rights and provider is not None and hasattr(provider, "layerMetadata"):
        rights = list(provider.layerMetadata().rights())
    parts = [_server(layer).attribution(), *rights]
    return "; ".join(dict.fromkeys(part.strip() for part in parts if part and part.strip()))


def credit_source(results: QgsVectorLayer, project: QgsProject, raster: str) -> None:
    """Keep the credit of the project's raster layer whose source is ``raster`` (its data source, or
    the file it reads) on the ``results`` layer; nothing when no such layer states one."""
    for layer in project.mapLayers().values():
        if layer is not results and raster in (layer.source(), layer.source().split("|", 1)[0]):
            credit = source_credit(layer)
            if credit:
                keep_credit(results, layer.name(), credit)
                return


def credits(results: QgsVectorLayer) -> dict[str, str]:
    """The credits kept on a results layer, by source layer name."""
    try:
        kept = json.loads(str(results.customProperty(CREDITS_KEY, "") or "{}"))
    except ValueError:
        return {}
    return {str(name): str(credit) for name, credit in kept.items()} if isinstance(kept, dict) else {}


def keep_credit(results: QgsVectorLayer, source_name: str, credit: str) -> None:
    """Add ``credit`` (of the source layer ``source_name``) to the results layer's credits and show them."""
    kept = {**credits(results), source_name: credit}
    results.setCustomProperty(CREDITS_KEY, json.dumps(kept, ensure_ascii=False))
    texts = list(dict.fromkeys(kept.values()))
    _server(results).setAttribution("; ".join(texts))
    metadata = results.metadata()
    metadata.setRights(texts)
    lines = [f"- {name}: {text}" for name, text in kept.items()]
    metadata.setAbstract("\n".join([_own_abstract(metadata.abstract()), ABSTRACT_HEAD, *lines]).strip())
    results.setMetadata(metadata)


def _own_abstract(abstract: str) -> str:
    """The abstract without the credits written there before."""
    head = abstract.find(ABSTRACT_HEAD)
    return abstract if head < 0 else abstract[:head].rstrip()


def _server(layer: QgsMapLayer):  # QgsMapLayerServerProperties (QGIS >= 3.38) or the layer itself
    """Where a layer's attribution lives: its server properties from QGIS 3.38 on, the layer before."""
    properties = layer.serverProperties() if hasattr(layer, "serverProperties") else None
    return properties if properties is not None and hasattr(properties, "attribution") else layer
