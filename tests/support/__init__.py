"""What the tests share; fixtures stay in conftest.py.

commands      run the real `archiver` command: `run_archiver`, `start_archiver`, `sync_env`
databases     scratch databases (made by archiver.bench.scratch) and `rows` / `scalar`
fakes         sync against the fake API in-process; a fake that serves any one listing
payloads      a sample job and its checkpoints, as the API documents them
schemas       the vendored OpenAPI schemas: the fields each API object has and requires
orgs          an organisation archived over two nights, and what the API served each night
archive_dump  whole archives as comparable rows
times         timestamps read back from either database, or written by the API, as UTC
waiting       `wait_for` an event instead of sleeping and hoping
"""
