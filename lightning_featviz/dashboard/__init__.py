"""The FEATVIZ tab of TensorBoard: the files the callback writes for it (:mod:`.data`, :mod:`.export`) and the
TensorBoard plugin that serves them (:mod:`.plugin`, loaded by TensorBoard through the package's entry point).

May import: ``capture``, ``analysis`` and ``report`` (only :mod:`.export`, which the report's writer calls);
:mod:`.data` and :mod:`.plugin` import nothing else of lightning_featviz, so TensorBoard loads the tab without torch.
"""
