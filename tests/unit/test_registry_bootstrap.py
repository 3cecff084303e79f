"""The registry's composition root hands every webhook setting to the webhooks."""

from __future__ import annotations

from datetime import timedelta

from core.settings import Settings
from registry.bootstrap import webhook_config


def test_every_webhook_setting_reaches_the_webhooks() -> None:
    config = webhook_config(Settings.from_env({
        "FP_WEBHOOK_SECRET": "shared", "FP_GITHUB_WEBHOOK_SECRET": "gh",
        "FP_GITLAB_WEBHOOK_SECRET": "gl", "FP_GIT_REPOSITORIES": "org/features",
        "FP_WEBHOOK_RETENTION": "2d", "FP_GIT_BRANCH": "release",
        "FP_FEATURES_PATH": "defs", "FP_WEBHOOK_PYTHON": "off"}))
    assert (config.secret, config.github_secret, config.gitlab_secret) == ("shared", "gh", "gl")
    assert config.repositories == ("org/features",)
    assert config.retention == timedelta(days=2)
    assert (config.branch, config.features_path) == ("release", "defs")
    assert config.python == "off"
