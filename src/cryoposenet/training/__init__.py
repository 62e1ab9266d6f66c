"""Training and pose inference: particles in, map and poses out.

Above ``physics``, ``io`` and ``model``; never imports ``analysis`` or ``runs``. ``train`` is
the step (encoder + map on the L2 loss), ``schedule`` the band and annealing plan,
``pose_search`` / ``shift_search`` the grid and local searches, ``refine`` predict's per-image
refinement, ``data`` / ``inputs`` the particle stacks and what is detected from them
(``contrast``, shifts, box), ``checkpoint`` / ``distributed`` the state on disk and across ranks.
"""
