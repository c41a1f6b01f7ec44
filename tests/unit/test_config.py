from __future__ import annotations

import argparse
import logging

import pytest

from xmasq_driver import config, log


def _args(*argv):
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults():
    cfg = config.load(_args(), environ={})
    assert cfg.socket == "/run/docker/plugins/xmasq.sock"
    assert cfg.etcd_endpoint_list == ["http://127.0.0.1:2379"]


def test_flag_beats_environment_beats_default():
    env = {"XMASQ_ETCD_TIMEOUT": "7", "XMASQ_ETCD_ENDPOINTS": "http://a:2379, https://b:2379"}
    cfg = config.load(_args(), environ=env)
    assert cfg.etcd_timeout == 7.0 and cfg.etcd_endpoint_list == ["http://a:2379", "https://b:2379"]
    assert config.load(_args("--etcd-timeout", "2.5"), environ=env).etcd_timeout == 2.5


def test_bad_value_names_the_variable():
    with pytest.raises(SystemExit, match="XMASQ_THREADS='many' is not a valid int"):
        config.load(_args(), environ={"XMASQ_THREADS": "many"})


@pytest.mark.parametrize(
    ("var", "value", "choices"),
    [
        ("XMASQ_FASTPATH", "yes", "on or off"),
        ("XMASQ_STEER_FLOWS", "On", "rfs, rps or off"),
        ("XMASQ_SCOPE", "swarm", "local or global"),
    ],
)
def test_a_setting_with_choices_refuses_anything_else(var, value, choices):
    with pytest.raises(SystemExit, match=f"{var}='{value}' must be {choices}"):
        config.load(_args(), environ={var: value})


def test_a_former_name_of_a_choice_still_means_it():
    assert config.load(_args(), environ={"XMASQ_STEER_FLOWS": "on"}).steer_flows == "rps"
    assert config.load(_args(), environ={}).steer_flows == "rfs"


def test_logs_are_structured_and_redact_secrets(capsys):
    log.setup("INFO")
    log.get("test").info("network created", network="abc", etcd_key="/etc/xmasq/key.pem", subnet="10.0.0.0/24")
    err = capsys.readouterr().err
    assert 'xmasq.test "network created" network=abc etcd_key=<redacted> subnet=10.0.0.0/24' in err
    logging.getLogger("xmasq").handlers.clear()
