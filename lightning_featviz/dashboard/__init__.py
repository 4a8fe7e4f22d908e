"""The FEATVIZ tab of TensorBoard: the files the callback writes for it (:mod:`.data`, :mod:`.export`) and the
TensorBoard plugin that serves them (:mod:`.plugin`, loaded by TensorBoard through the package's entry point)."""
