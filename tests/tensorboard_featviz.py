"""``tensorboard`` with the FEATVIZ plugin of this checkout added when the installed package's entry point does not
provide it (an editable install made before the entry point existed): what ``python -m tensorboard.main`` runs."""

import sys

from absl import app
from tensorboard import default, main_lib, program

from lightning_featviz.dashboard.plugin import FeatvizPlugin

if __name__ == "__main__":
    main_lib.global_init()
    plugins = default.get_plugins()
    if not any(getattr(plugin, "plugin_name", None) == FeatvizPlugin.plugin_name for plugin in plugins):
        plugins.append(FeatvizPlugin)
    board = program.TensorBoard(plugins=plugins)
    app.run(board.main, flags_parser=board.configure)
    sys.exit(0)
