"""The webhook endpoints end to end: signed requests in, definitions registered (PostgreSQL,
a local bare repository reached by file:// URL, the sandboxed loader, the worker thread)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select

from registry.store.postgres import PostgresRegistryStore
from registry.store.tables import webhook_deliveries
from tests.webhooks.conftest import ClientFactory
from tests.webhooks.support import (
    FIXTURES,
    NULL_SHA,
    SECRET,
    GitRemote,
    examples_file,
    finished,
    github_push,
    github_request,
    gitlab_push,
    gitlab_request,
    poll,
    sign,
    with_description,
)

EXAMPLE_DEFINITIONS = [
    ("entity", "user"), ("entity", "merchant"), ("source", "transactions"),
    ("feature_view", "user_transactions"), ("feature_view", "merchant_transactions"),
    ("on_demand_feature_view", "user_ratios")]


def post_github(client: TestClient[Any], payload: Any, **options: Any) -> Any:
    body, headers = github_request(payload, **options)
    return client.post("/v1/webhooks/github", content=body, headers=headers)


def post_gitlab(client: TestClient[Any], payload: Any, **options: Any) -> Any:
    body, headers = gitlab_request(payload, **options)
    return client.post("/v1/webhooks/gitlab", content=body, headers=headers)


def outcome(client: TestClient[Any], delivery_id: str) -> dict[str, Any]:
    """The delivery once the worker has finished with it."""
    return poll(lambda: client.get(f"/v1/webhooks/deliveries/{delivery_id}").json(), finished)


def events(client: TestClient[Any]) -> list[dict[str, Any]]:
    return list(client.get("/v1/events").json()["events"])


# --------------------------------------------------------------------------- applied pushes

def test_a_github_push_is_answered_at_once_and_applied_with_its_provenance(
        client: TestClient[Any], remote: GitRemote) -> None:
    commit = remote.commit_examples()

    started = time.monotonic()
    response = post_github(client, github_push(remote.url, commit), delivery="gh-1")
    assert time.monotonic() - started < 1.0
    assert response.status_code == 202, response.text
    assert response.json()["delivery_id"] == "gh-1"
    assert response.json()["commit"] == commit

    done = outcome(client, "gh-1")
    assert done["status"] == "applied", done
    assert done["error"] is None
    assert [(c["kind"], c["name"], c["action"]) for c in done["changes"]] == [
        (kind, name, "create") for kind, name in EXAMPLE_DEFINITIONS]
    assert done["missing_from_repository"] == []

    recorded = events(client)
    assert len(recorded) == len(EXAMPLE_DEFINITIONS)
    assert all(event["metadata"] == {
        "actor": "webhook:github", "message": "Initial commit", "provider": "github",
        "repository": remote.url, "ref": "refs/heads/main", "commit": commit,
        "delivery_id": "gh-1", "pusher": "Codertocat"} for event in recorded)
    versions = client.get("/v1/feature-views/user_transactions/versions").json()["versions"]
    assert versions[0]["provenance"]["commit"] == commit


def test_a_gitlab_push_is_applied(client: TestClient[Any], remote: GitRemote) -> None:
    commit = remote.commit_examples()

    response = post_gitlab(client, gitlab_push(remote.url, commit), delivery="gl-1")
    assert response.status_code == 202, response.text

    done = outcome(client, "gl-1")
    assert done["status"] == "applied", done
    assert done["provider"] == "gitlab"
    metadata = events(client)[0]["metadata"]
    assert (metadata["provider"], metadata["commit"], metadata["pusher"]) == (
        "gitlab", commit, "codercat")


def test_the_same_delivery_twice_is_processed_once(client: TestClient[Any], remote: GitRemote,
                                                   stored_deliveries: Any) -> None:
    commit = remote.commit_examples()
    payload = github_push(remote.url, commit)

    first = post_github(client, payload, delivery="twice")
    again = post_github(client, payload, delivery="twice")
    assert (first.status_code, again.status_code) == (202, 202)
    applied = outcome(client, "twice")
    assert applied["status"] == "applied"

    redelivered = post_github(client, payload, delivery="twice")
    assert redelivered.status_code == 202
    assert redelivered.json() == applied  # the recorded outcome, not a new processing
    assert stored_deliveries() == 1
    assert len(events(client)) == len(EXAMPLE_DEFINITIONS)


def test_pushes_to_the_branch_are_applied_in_the_order_received(client: TestClient[Any],
                                                                remote: GitRemote) -> None:
    views = examples_file("views.yaml")
    remote.commit_examples()
    commits = [remote.commit({"features/views.yaml": with_description(views, f"Version {n}.")})
               for n in range(1, 4)]

    for n, commit in enumerate(commits):
        before = commits[n - 1] if n else NULL_SHA
        post_github(client, github_push(remote.url, commit, before=before), delivery=f"o-{n}")
    assert [outcome(client, f"o-{n}")["status"] for n in range(3)] == ["applied"] * 3

    view = client.get("/v1/feature-views/user_transactions").json()
    assert (view["latest_version"], view["spec"]["description"]) == (3, "Version 3.")
    versions = client.get("/v1/feature-views/user_transactions/versions").json()["versions"]
    assert [v["provenance"]["commit"] for v in versions] == commits


def test_a_definition_deleted_from_the_repository_is_reported_and_kept(
        client: TestClient[Any], remote: GitRemote) -> None:
    post_github(client, github_push(remote.url, remote.commit_examples()), delivery="full")
    assert outcome(client, "full")["status"] == "applied"
    views = examples_file("views.yaml")
    without_ratios = views[:views.index("- kind: on_demand_feature_view")]
    commit = remote.commit({"features/views.yaml": without_ratios}, "drop user_ratios")

    post_github(client, github_push(remote.url, commit), delivery="deleted")
    done = outcome(client, "deleted")
    assert done["status"] == "applied", done
    assert done["missing_from_repository"] == ["on_demand_feature_view:user_ratios"]
    assert {c["action"] for c in done["changes"]} == {"unchanged"}
    assert client.get("/v1/on-demand-feature-views/user_ratios").status_code == 200
    assert len(events(client)) == len(EXAMPLE_DEFINITIONS)


# --------------------------------------------------------------------------- refused requests

def test_a_bad_or_missing_signature_is_refused_and_nothing_stored(
        client: TestClient[Any], remote: GitRemote, stored_deliveries: Any) -> None:
    payload = github_push(remote.url, remote.commit_examples())
    body, headers = github_request(payload)

    wrong_secret = {**headers, "X-Hub-Signature-256": sign(body, "not the secret")}
    unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
    for attempt in (client.post("/v1/webhooks/github", content=body, headers=wrong_secret),
                    client.post("/v1/webhooks/github", content=body, headers=unsigned),
                    client.post("/v1/webhooks/github", content=body + b" ", headers=headers),
                    post_gitlab(client, gitlab_push(remote.url, remote.head()), token="guess")):
        assert attempt.status_code == 401, attempt.text
        assert attempt.headers["content-type"].startswith("application/problem+json")
    assert stored_deliveries() == 0


def test_every_webhook_is_refused_while_no_secret_is_configured(
        make_client: ClientFactory, remote: GitRemote, stored_deliveries: Any) -> None:
    client = make_client(secret=None)
    commit = remote.commit_examples()

    github = post_github(client, github_push(remote.url, commit))
    gitlab = post_gitlab(client, gitlab_push(remote.url, commit))
    assert (github.status_code, gitlab.status_code) == (403, 403)
    assert "FP_WEBHOOK_SECRET" in github.json()["detail"]
    assert stored_deliveries() == 0


def test_ping_is_answered_204(client: TestClient[Any], stored_deliveries: Any) -> None:
    ping = (FIXTURES / "github_ping.json").read_bytes()
    response = post_github(client, ping, event="ping")
    assert response.status_code == 204
    assert stored_deliveries() == 0


def test_malformed_json_is_refused(client: TestClient[Any], stored_deliveries: Any) -> None:
    response = post_github(client, b'{"ref": "refs/heads/main", ')
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]
    assert stored_deliveries() == 0


def test_a_body_over_25_mb_is_refused(client: TestClient[Any], stored_deliveries: Any) -> None:
    padding = " " * (25 * 1024 * 1024)
    response = post_github(client, f'{{"zen": "big"}}{padding}'.encode())
    assert response.status_code == 413
    assert stored_deliveries() == 0


def test_unknown_delivery_is_404(client: TestClient[Any]) -> None:
    response = client.get("/v1/webhooks/deliveries/never-sent")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


# --------------------------------------------------------------------------- skipped pushes

@pytest.mark.parametrize(("ref", "deleted", "reason"), [
    ("refs/heads/feature", False, "push to refs/heads/feature: only pushes to refs/heads/main"),
    ("refs/tags/v1.0.0", False, "tag push (refs/tags/v1.0.0)"),
    ("refs/heads/main", True, "refs/heads/main was deleted"),
])
def test_other_branches_tags_and_deletions_are_skipped(
        client: TestClient[Any], remote: GitRemote, ref: str, deleted: bool,
        reason: str) -> None:
    commit = remote.commit_examples()
    payload = github_push(remote.url, NULL_SHA if deleted else commit, before=commit, ref=ref)

    response = post_github(client, payload, delivery="skip-me")
    assert response.status_code == 202
    assert response.json()["status"] == "skipped"
    assert reason in response.json()["reason"]
    assert outcome(client, "skip-me")["status"] == "skipped"
    assert events(client) == []


def test_other_events_are_skipped(client: TestClient[Any]) -> None:
    response = post_github(client, {"action": "opened", "issue": {"number": 1}}, event="issues")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["event"]) == ("skipped", "issues")


def test_the_branch_applied_is_the_configured_one(make_client: ClientFactory,
                                                  remote: GitRemote) -> None:
    client = make_client(branch="production")
    commit = remote.commit_examples()
    main = post_github(client, github_push(remote.url, commit))
    post_github(client, github_push(remote.url, commit, ref="refs/heads/production"),
                delivery="prod")
    assert main.json()["status"] == "skipped"
    assert outcome(client, "prod")["status"] == "applied"


# --------------------------------------------------------------------------- failed pushes

def test_invalid_yaml_fails_with_the_loaders_message_and_registers_nothing(
        client: TestClient[Any], remote: GitRemote) -> None:
    remote.commit_examples()
    commit = remote.commit({"features/broken.yaml": "- kind: entity\n  name: [oops\n"})

    post_github(client, github_push(remote.url, commit), delivery="broken")
    done = outcome(client, "broken")
    assert done["status"] == "failed"
    assert done["error"].startswith("features/broken.yaml:3:1: invalid YAML"), done["error"]
    assert events(client) == []


def test_invalid_definitions_fail_with_every_problem_and_register_nothing(
        client: TestClient[Any], remote: GitRemote) -> None:
    remote.commit_examples()
    commit = remote.commit({"features/extra.yaml": """
        - kind: entity
          name: shop
          join_keys: [shop_id]
          colour: blue
        - kind: feature_view
          name: shop_sales
          entities: [shop]
          source: transactions
          features: [{name: n, aggregation: median, window: 1h}]
        """})

    post_github(client, github_push(remote.url, commit), delivery="invalid")
    done = outcome(client, "invalid")
    assert done["status"] == "failed"
    assert "colour: unknown key" in done["error"], done["error"]
    assert "median" in done["error"], done["error"]
    assert events(client) == []
    assert client.get("/v1/entities/user").status_code == 404


def test_definitions_that_loop_forever_are_stopped_at_the_time_limit(
        client: TestClient[Any], remote: GitRemote) -> None:
    remote.commit_examples()
    commit = remote.commit({"features/forever.py": "while True:\n    pass\n"})

    started = time.monotonic()
    post_github(client, github_push(remote.url, commit), delivery="forever")
    done = outcome(client, "forever")
    assert done["status"] == "failed"
    assert done["error"].startswith("loading the definitions "), done["error"]
    assert done["error"].endswith(" and was stopped"), done["error"]
    # Stopped by the CPU limit (3 s) or at the latest the wall-clock limit (10 s); the margin
    # is for fetching the push on a busy machine.
    assert time.monotonic() - started < 10 + 8
    assert events(client) == []


def test_definitions_reading_the_environment_see_no_secrets(
        client: TestClient[Any], remote: GitRemote, monkeypatch: pytest.MonkeyPatch,
        database_url: str) -> None:
    secrets = {"FP_DATABASE_URL": database_url, "FP_WEBHOOK_SECRET": SECRET,
               "FP_API_TOKENS": "token-that-must-not-leak"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    remote.commit_examples()
    commit = remote.commit({"features/snoop.py": """
        import json, os
        from registry.sdk import Entity
        snoop = Entity("snoop", join_keys=["id"], description=json.dumps(dict(os.environ)))
        """})

    post_github(client, github_push(remote.url, commit), delivery="snoop")
    assert outcome(client, "snoop")["status"] == "applied"
    seen = client.get("/v1/entities/snoop").json()["spec"]["description"]
    assert set(json.loads(seen)) <= {"PATH", "HOME", "LANG", "PYTHONPATH"}
    assert not any(value in seen for value in secrets.values())


def test_an_unreachable_repository_fails_with_gits_message(make_client: ClientFactory,
                                                           remote: GitRemote) -> None:
    commit = remote.commit_examples()
    missing = remote.url.replace("origin.git", "missing.git")
    client = make_client(repositories=(missing,))

    post_github(client, github_push(missing, commit), delivery="unreachable")
    done = outcome(client, "unreachable")
    assert done["status"] == "failed"
    assert done["error"].startswith("git fetch failed:"), done["error"]


def test_a_repository_url_running_a_command_is_refused(make_client: ClientFactory,
                                                       remote: GitRemote, tmp_path: Any) -> None:
    commit = remote.commit_examples()
    command = f"ext::sh -c touch% {tmp_path}/pwned"
    # Even listed exactly, git's own checks refuse it.
    client = make_client(repositories=(command,))

    post_github(client, github_push(command, commit), delivery="ext")
    done = outcome(client, "ext")
    assert done["status"] == "failed"
    assert "remote helper" in done["error"] or "spaces" in done["error"]
    assert not (tmp_path / "pwned").exists()


# --------------------------------------------------------------------------- metrics

def test_metrics_count_deliveries_by_status(client: TestClient[Any], remote: GitRemote) -> None:
    commit = remote.commit_examples()
    post_github(client, github_push(remote.url, commit), delivery="m-1")
    post_github(client, github_push(remote.url, commit, ref="refs/heads/dev"), delivery="m-2")
    outcome(client, "m-1")

    metrics = client.get("/metrics").text
    for status, count in (("applied", 1), ("skipped", 1), ("queued", 0), ("failed", 0)):
        assert f'fp_registry_webhook_deliveries{{status="{status}"}} {count}.0' in metrics


def test_the_endpoints_are_in_the_openapi_schema(client: TestClient[Any]) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert {"/v1/webhooks/github", "/v1/webhooks/gitlab",
            "/v1/webhooks/deliveries/{delivery_id}"} <= set(paths)


# --------------------------------------------------------------------------- replays

def test_an_old_push_sent_again_under_a_new_delivery_id_is_skipped(client: TestClient[Any],
                                                                   remote: GitRemote) -> None:
    views = examples_file("views.yaml")
    first = remote.commit_examples()
    second = remote.commit({"features/views.yaml": with_description(views, "Version 2.")})
    old_push = github_push(remote.url, first)
    post_github(client, old_push, delivery="first")
    post_github(client, github_push(remote.url, second, before=first), delivery="second")
    assert [outcome(client, d)["status"] for d in ("first", "second")] == ["applied"] * 2
    recorded = len(events(client))

    # The same signed body, a delivery id of the sender's choosing.
    post_github(client, old_push, delivery="replayed")
    replayed = outcome(client, "replayed")
    assert replayed["status"] == "skipped", replayed
    assert replayed["reason"].startswith(f"commit {first} is an ancestor of applied {second}")
    post_github(client, github_push(remote.url, second, before=first), delivery="again")
    assert outcome(client, "again")["reason"] == f"commit {second} is already applied"

    view = client.get("/v1/feature-views/user_transactions").json()
    assert (view["latest_version"], view["spec"]["description"]) == (2, "Version 2.")
    assert len(events(client)) == recorded


def test_pushes_delivered_out_of_order_never_roll_back(client: TestClient[Any],
                                                       remote: GitRemote) -> None:
    views = examples_file("views.yaml")
    first = remote.commit_examples()
    second = remote.commit({"features/views.yaml": with_description(views, "Version 2.")})

    post_github(client, github_push(remote.url, second, before=first), delivery="late-second")
    assert outcome(client, "late-second")["status"] == "applied"
    post_github(client, github_push(remote.url, first), delivery="early-first")
    assert "is an ancestor of applied" in outcome(client, "early-first")["reason"]
    view = client.get("/v1/feature-views/user_transactions").json()
    assert (view["latest_version"], view["spec"]["description"]) == (1, "Version 2.")


def test_a_newer_commit_after_a_force_push_elsewhere_is_applied(client: TestClient[Any],
                                                                remote: GitRemote) -> None:
    first = remote.commit_examples()
    post_github(client, github_push(remote.url, first), delivery="base")
    assert outcome(client, "base")["status"] == "applied"
    views = examples_file("views.yaml")
    rewritten = remote.commit({"features/views.yaml": with_description(views, "Rewritten.")},
                              branch="rewrite")

    post_github(client, github_push(remote.url, rewritten, before=first), delivery="rewritten")
    assert outcome(client, "rewritten")["status"] == "applied"


# --------------------------------------------------------------------------- repositories

def test_without_a_list_only_https_and_ssh_repositories_are_fetched(
        make_client: ClientFactory, remote: GitRemote, tmp_path: Any) -> None:
    client = make_client(repositories=())
    commit = remote.commit_examples()
    for n, url in enumerate((remote.url, "http://169.254.169.254/latest/meta-data.git",
                             "git://internal-host/features.git")):
        response = post_github(client, github_push(url, commit), delivery=f"url-{n}")
        assert response.json()["status"] == "skipped", response.json()
        assert "only https:// and ssh://" in response.json()["reason"]
    assert not (tmp_path / "git-cache").exists(), "nothing was fetched"


def test_a_repository_not_listed_is_skipped(make_client: ClientFactory,
                                            remote: GitRemote) -> None:
    # A shared org-wide hook delivers pushes of every repository of the organisation.
    client = make_client(repositories=("octo-org/features",))
    response = post_github(client, github_push("https://github.com/octo-org/website.git",
                                               remote.commit_examples()), delivery="website")
    assert response.json()["status"] == "skipped"
    assert response.json()["reason"] == ("repository https://github.com/octo-org/website.git is "
                                         "not one of FP_GIT_REPOSITORIES")
    assert events(client) == []


def test_credentials_in_a_repository_url_are_never_shown(
        make_client: ClientFactory, remote: GitRemote,
        caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on port 9: the fetch fails at once, and git quotes the URL.
    url = "https://oauth2:glpat-hunter2@127.0.0.1:9/acme/features.git?private_token=glpat-hunter2"
    client = make_client(repositories=(url,))
    caplog.set_level(logging.INFO)

    received = post_github(client, github_push(url, remote.commit_examples()), delivery="creds")
    assert received.json()["repository"] == "https://127.0.0.1:9/acme/features.git"
    done = outcome(client, "creds")
    assert done["status"] == "failed" and done["error"].startswith("git fetch failed:"), done
    assert "hunter2" not in json.dumps(done)
    assert "hunter2" not in caplog.text


# --------------------------------------------------------------------------- secrets

def test_each_provider_has_its_own_secret_and_is_off_without_one(
        make_client: ClientFactory, remote: GitRemote, stored_deliveries: Any) -> None:
    client = make_client(secret=None, github_secret="github only")
    commit = remote.commit_examples()

    assert post_github(client, github_push(remote.url, commit), secret=SECRET).status_code == 401
    signed = post_github(client, github_push(remote.url, commit), secret="github only")
    assert signed.status_code == 202, signed.text
    gitlab = post_gitlab(client, gitlab_push(remote.url, commit), token="github only")
    assert gitlab.status_code == 403
    assert "FP_GITLAB_WEBHOOK_SECRET" in gitlab.json()["detail"]
    assert stored_deliveries() == 1


def test_the_shared_secret_serves_a_provider_without_its_own(make_client: ClientFactory,
                                                             remote: GitRemote) -> None:
    client = make_client(secret=SECRET, gitlab_secret="gitlab only")
    commit = remote.commit_examples()
    assert post_github(client, github_push(remote.url, commit)).status_code == 202
    assert post_gitlab(client, gitlab_push(remote.url, commit)).status_code == 401
    assert post_gitlab(client, gitlab_push(remote.url, commit),
                       token="gitlab only").status_code == 202


# --------------------------------------------------------------------------- retention

def test_a_skipped_deliverys_payload_is_not_kept(client: TestClient[Any], remote: GitRemote,
                                                 store: PostgresRegistryStore) -> None:
    commit = remote.commit_examples()
    post_github(client, github_push(remote.url, commit, ref="refs/heads/dev"), delivery="dev")
    post_github(client, github_push(remote.url, commit), delivery="main")
    post_github(client, github_push(remote.url, commit), delivery="main-again")
    assert outcome(client, "main-again")["status"] == "skipped"

    with store.engine.connect() as conn:
        payloads = dict(conn.execute(select(webhook_deliveries.c.delivery_id,
                                            webhook_deliveries.c.payload)).all())
    assert payloads["dev"] == payloads["main-again"] == b""
    assert json.loads(payloads["main"])["after"] == commit, "kept until the retention"
