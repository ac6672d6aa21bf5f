"""Everything specific to Think2Seg-RS, the model pair this product runs, in one place.

- :mod:`~think2seg.think2seg_rs.prompt`: the 840x840 view the LVLM sees and the exact prompt text
  it was trained on (the user turn around the analyst's question);
- :mod:`~think2seg.think2seg_rs.answer`: reading its answer (``<think>…</think><answer>[…]</answer>``
  with ``bbox_2d`` / ``positive_points`` items) into instance prompts, in the product's rules;
- :mod:`~think2seg.think2seg_rs.reference`: the same, with the rules of the reference test-time
  parser exactly, for the paper's evaluation protocol.

The rest of the backend (the engine, SAM, vectorizing, the drivers) does not depend on these
details beyond :func:`~think2seg.think2seg_rs.prompt.make_view`, the prompt builder and
:func:`~think2seg.think2seg_rs.answer.parse_answer`.
"""
