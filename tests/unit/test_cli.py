"""The ``promring`` command line: Thanos's exact flag names, ``--version`` and defaults in help."""
from __future__ import annotations

import argparse
import re

import pytest

from promring.cli import build_parser


def _all_parsers(p: argparse.ArgumentParser, path=()):
    yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from _all_parsers(sp, path + (name,))


def _leaf_commands():
    return [path for path, p in _all_parsers(build_parser())
            if path and not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)]


@pytest.mark.parametrize("path", [()] + _leaf_commands(), ids=lambda p: " ".join(p) or "top")
def test_version_on_every_command(path, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*path, "--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("promring, version ")


@pytest.mark.parametrize("path", _leaf_commands(), ids=" ".join)
def test_help_shows_every_flags_default(path):
    parser = dict(_all_parsers(build_parser()))[path]
    text = parser.format_help()
    entries = re.split(r"\n  (?=-)", text[text.index("\noptions:"):])
    for a in parser._actions:
        if a.option_strings and a.default is not argparse.SUPPRESS:
            entry = next(e for e in entries if re.match(re.escape(a.option_strings[0]) + r"[ ,\n]", e))
            assert "(default: " in " ".join(entry.split()), (path, a.option_strings)


@pytest.mark.parametrize("argv", [
    ["query", "--end=127.0.0.1:1"],                          # would have been --endpoint
    ["store", "--objstore.config-file=a.yml", "--objstore.config-fi=x.yml"],
    ["receive", "--receive.hashrings-f=h.json"],
    ["tools", "bucket", "ls", "--objstore.config-f=x"],
])
def test_flag_prefixes_are_not_accepted(argv, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err or "arguments are required" in err


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_thanos_defaults_of_the_querier_flags():
    a = _parse("query")
    assert (a.grpc_address, a.store_response_timeout, a.sd_interval) == ("0.0.0.0:10901", "0ms", "5m")
    assert (a.web_route_prefix, a.web_external_prefix, a.strict_endpoints, a.sd_files) == ("", "", [], [])
    assert _parse("receive").replica_header == "THANOS-REPLICA"


def test_store_is_an_alias_of_endpoint_and_sd_files_of_both_names():
    a = _parse("query", "--store", "a:1", "--endpoint=b:2", "--store=c:3", "--endpoint-strict", "d:4",
               "--store.sd-files", "x.yml", "--endpoint.sd-files=y.json")
    assert a.endpoints == ["a:1", "b:2", "c:3"] and a.strict_endpoints == ["d:4"]
    assert a.sd_files == ["x.yml", "y.json"]


def test_route_prefix_defaults_to_external_prefix():
    from promring.cli import query_config
    assert query_config(_parse("query", "--web.external-prefix=/thanos"), []).route_prefix == "/thanos"
    cfg = query_config(_parse("query", "--web.external-prefix=/x", "--web.route-prefix=/y",
                              "--store.response-timeout=1500ms", "--store.sd-interval=10s"), [])
    assert (cfg.route_prefix, cfg.external_prefix) == ("/y", "/x")
    assert (cfg.store_response_timeout_s, cfg.sd_interval_s) == (1.5, 10.0)


YAML = "type: FILESYSTEM\nconfig:\n  directory: /tmp/b\n"


@pytest.mark.parametrize("cmd", [["store"], ["receive"], ["compact"], ["tools", "bucket", "ls"]])
def test_inline_objstore_config_is_its_own_flag(cmd, tmp_path):
    from objstore.flags import objstore_yaml
    a = _parse(*cmd, f"--objstore.config={YAML}")
    assert a.objstore_config == YAML and a.objstore_config_file is None
    assert objstore_yaml(a) == YAML
    f = tmp_path / "b.yml"
    f.write_text(YAML)
    assert objstore_yaml(_parse(*cmd, "--objstore.config-file", str(f))) == YAML
    with pytest.raises(SystemExit, match="both --objstore.config-file and --objstore.config"):
        objstore_yaml(_parse(*cmd, "--objstore.config-file", str(f), "--objstore.config", YAML))


@pytest.mark.parametrize("cmd", [["store"], ["compact"], ["tools", "bucket", "verify"]])
def test_objstore_is_required_where_thanos_requires_it(cmd):
    from objstore.flags import objstore_yaml
    with pytest.raises(SystemExit, match="--objstore.config-file or --objstore.config is required"):
        objstore_yaml(_parse(*cmd))
    assert objstore_yaml(_parse("receive")) is None


def test_inline_hashrings_make_a_router(tmp_path):
    from promring.cli import receive_config
    ring = '[{"endpoints": ["127.0.0.1:10901"]}]'
    cfg = receive_config(_parse("receive", f"--receive.hashrings={ring}",
                                "--receive.replica-header=X-Replica"), str(tmp_path), "", "")
    assert cfg.is_router and not cfg.is_ingestor
    assert cfg.hashrings_content == ring and cfg.hashrings_file is None
    assert cfg.replica_header == "X-Replica"
    assert receive_config(_parse("receive"), str(tmp_path), "", "").is_ingestor


def test_endpoint_sd_config_flags():
    from promring.cli import query_config
    a = _parse("query", "--endpoint.sd-config=endpoints: [{address: 'a:1'}]")
    cfg = query_config(a, [])
    assert cfg.endpoint_config.startswith("endpoints") and cfg.endpoint_config_interval_s == 300
    with pytest.raises(SystemExit, match="both --endpoint.sd-config-file and --endpoint.sd-config"):
        query_config(_parse("query", "--endpoint.sd-config-file=x", "--endpoint.sd-config=y"), [])
    with pytest.raises(SystemExit, match="endpoints must be a list"):
        query_config(_parse("query", "--endpoint.sd-config=endpoints: 7"), [])


def test_receive_refuses_azs_with_hashmod_at_start(tmp_path, capsys):
    """Thanos does not start with an AZ-aware hashmod hashring; neither does promring, with a
    clear message instead of a traceback."""
    from promring.cli import main
    ring = '[{"endpoints": [{"address": "a:1", "az": "x"}]}]'
    with pytest.raises(SystemExit) as e:
        main(["receive", "--tsdb.path", str(tmp_path), f"--receive.hashrings={ring}"])
    assert str(e.value) == ("invalid hashrings configuration: Hashmod algorithm does not support "
                            "AZ aware hashring configuration. Either use Ketama or remove AZ "
                            "configuration.")


def test_replica_header_name_applies_to_an_ingestor_too(tmp_path):
    from promring.cli import receive_config
    cfg = receive_config(_parse("receive", "--receive.replica-header=X-Rep"), str(tmp_path), "", "")
    assert cfg.is_ingestor and not cfg.is_router and cfg.replica_header == "X-Rep"


def test_compactor_block_viewer_flags(tmp_path, capsys):
    """Thanos's compactor flags for the bucket UI on its HTTP port; a zero interval is refused
    at start with exit 2, not a traceback once the server is up."""
    from compactor import cli_config
    from promring.cli import main
    objstore = f"--objstore.config=type: FILESYSTEM\nconfig:\n  directory: {tmp_path}\n"
    cfg = cli_config(_parse("compact", objstore, "--block-viewer.global.sync-block-interval=2m",
                            "--bucket-web-label=cluster"))
    assert (cfg.block_viewer_sync_s, cfg.bucket_web_label) == (120.0, "cluster")
    assert cli_config(_parse("compact", objstore)).block_viewer_sync_s == 60.0
    with pytest.raises(SystemExit) as e:
        main(["compact", objstore, "--block-viewer.global.sync-block-interval=0s",
              f"--data-dir={tmp_path / 'work'}", "--http-address="])
    assert e.value.code == 2
    assert "--block-viewer.global.sync-block-interval must be greater than 0" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["receive", "up"])
def test_out_of_order_time_window_flag(tmp_path, command):
    from promring.cli import receive_config
    assert receive_config(_parse(command), str(tmp_path), "", "").ooo_window_ms == 0
    cfg = receive_config(_parse(command, "--tsdb.out-of-order.time-window=90m",
                                "--tsdb.out-of-order.cap-max=64"), str(tmp_path), "", "")
    assert cfg.ooo_window_ms == 90 * 60_000


@pytest.mark.parametrize("compression", ["snappy", "none"])
def test_router_takes_skip_verify_with_either_compression(tmp_path, compression):
    """--remote-write.client-tls-skip-verify goes through our own HTTP/2 client, which can skip
    verification, so it is accepted whatever --receive.grpc-compression says."""
    from promring.cli import receive_config
    ring = '[{"endpoints": ["127.0.0.1:10901"]}]'
    cfg = receive_config(_parse("receive", f"--receive.hashrings={ring}",
                                f"--receive.grpc-compression={compression}",
                                "--remote-write.client-tls-secure",
                                "--remote-write.client-tls-skip-verify"), str(tmp_path), "", "")
    assert cfg.forward_tls.secure and cfg.forward_tls.skip_verify

