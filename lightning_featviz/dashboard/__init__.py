"""The FEATVIZ tab of TensorBoard: the files the callback writes for it (:mod:`.data`, :mod:`.export`) and the
TensorBoard plugin that serves them (:mod:`.plugin`, loaded by TensorBoard through the package's entry point).

:mod:`.export` makes an epoch's files from the analysis's results; the run's folder (``outputs.run_folder``) writes
them. May import: ``capture``, ``analysis``, ``render``, ``outputs`` (only :mod:`.export` imports ``analysis``);
:mod:`.data` and :mod:`.plugin` import only ``outputs.files``, so TensorBoard loads the tab without torch.
"""
