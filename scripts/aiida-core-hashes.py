#!/usr/bin/env python
"""Prints aiida-core's node hashes for the nodes of the tests in crates/aiida/src/orm/hash.rs.

Run with aiida-core 2.9.4 installed (scripts/check-aiida-core makes such a venv):
    ~/.cache/aiida-fixtures/aiida-core-2.9.4-venv/bin/python scripts/aiida-core-hashes.py
Each line: name, the `_aiida_hash` extra that storing set, `compute_hash()` of the stored node.
"""

import io
import os
import tempfile
import warnings

warnings.filterwarnings('ignore')
os.environ.setdefault('AIIDA_PATH', tempfile.mkdtemp())  # no ~/.aiida left behind

from aiida import load_profile, orm  # noqa: E402
from aiida.common.hashing import float_to_text  # noqa: E402
from aiida.common.links import LinkType  # noqa: E402
from aiida.storage.sqlite_temp import SqliteTempBackend  # noqa: E402

load_profile(SqliteTempBackend.create_profile(), allow_switch=True)


def show(name, node):
    node.store()
    print(name, node.base.extras.get('_aiida_hash'), node.base.caching.compute_hash())


def put(node, path, content):
    node.base.repository.put_object_from_filelike(io.BytesIO(content), path)


show('int42', orm.Int(42))
show('int3', orm.Int(3))
show('str', orm.Str('hello wörld'))
show('float', orm.Float(3.141592653589793))
show('bool', orm.Bool(True))
show('list', orm.List([1, 2, 3]))
nested = {'z': 1e20, 'y': False, 'w': 1e-7}
show('dict', orm.Dict({'a': 1, 'b': [1, 2.5, 'x', None, True, {'c': -0.0}], 'nested': nested, 'u': 'ü', 'big': 2**63, 'neg': -7}))
node = orm.Int(1)
put(node, 'notes/readme.txt', b'stored by the Rust engine')
show('int1-with-file', node)
node = orm.FolderData()
put(node, 'a.txt', b'top')
put(node, 'sub/deeper/c.txt', b'deep')
put(node, 'other/d.txt', b'other')
show('folder', node)
computer = orm.Computer(label='c', hostname='localhost', transport_type='core.local', scheduler_type='core.direct')
computer.backend_entity.bare_model.uuid = '6e0fa1a2-3f7b-4a59-9d7c-2a1f5b8c9d01'
computer.store()
show('remote', orm.RemoteData(remote_path='/tmp/x', computer=computer))
node = orm.CalcJobNode(computer=computer)
node.set_process_state('created')
node.set_process_label('Add')
node.set_option('resources', {'num_machines': 1})
node.set_option('max_wallclock_seconds', 60)
node.base.attributes.set('version', {'core': '2.9.4'})
put(node, 'in.txt', b'x')
show('calcjob', node)
node = orm.CalcFunctionNode()
node.base.links.add_incoming(orm.Int(3).store(), LinkType.INPUT_CALC, 'x')
node.set_process_label('add')
show('calcfunction', node)
floats = [0.1, 1 / 3, 1e-5, 123456789012345678.0, -0.0, 2**-21, 1e16, 100.0, 1e14, 12345678901234.0, 0.0001, 1e20]
floats += [1e-7, 2.5, -1.5e-300, 1.7976931348623157e308, 5e-324, 0.5, 99999999999999.5, 999999999999995.0, -42.0]
for value in floats + [0.000123456789012345]:
    print('float_to_text', repr(value), float_to_text(value, 14))
