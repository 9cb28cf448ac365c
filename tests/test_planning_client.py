"""`PlannerClient`'s own imports: numpy, msgpack and websockets, never torch or the rest of fcs."""

from __future__ import annotations

from helpers import run_python


def test_the_client_imports_without_torch_or_the_rest_of_fcs():
    code = ("import sys\n"
            "for name in ('torch', 'pydantic', 'yaml', 'zarr', 'h5py', 'timm', 'typer'):\n"
            "    sys.modules[name] = None\n"
            "from fcs_train.planning.client import PlannerClient, pack, unpack\n"
            "import fcs_train.planning.wire as wire\n"
            "assert pack is wire.pack  # one wire format, shared with the server\n"
            "import numpy as np\n"
            "assert unpack(pack({'a': np.ones(3)}))['a'].sum() == 3\n"
            "print('ok')\n")
    assert run_python(code).strip() == "ok"
