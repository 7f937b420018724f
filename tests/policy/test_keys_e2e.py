"""Keys, roles, budgets and the ledger through a real gateway process and the official SDKs.

Prices are set so every token costs exactly $1 (fake provider: one token per word), which makes
the money arithmetic readable. RELIABILITY.md rows: C1 (through HTTP), E3, E4, E6, E7.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from modelyard.policy.keys import generate_key
from tests.support import gateway_process

MASTER = "mk-canary-master-5f2a9c"
CONFIG = """\
embedded_models: false
cloud_models_from_env: false
storage: {{database: "sqlite:///{db}", reservations: {reservations}}}
teams:
  team-rl: {{rpm: 3}}
models:
  - name: echo
    deployments:
      - {{provider: fake, model: echo, pricing: {{input_per_mtok: 1000000, output_per_mtok: 1000000}}}}
  - name: other
    deployments: [{{provider: fake, model: echo}}]
"""


class Gateway:
    def __init__(self, url: str, log: Path, db: Path) -> None:
        self.url, self.log, self.db = url, log, db
        self.http = httpx.Client(base_url=url, timeout=20)

    def admin(self, method: str, path: str, key: str = MASTER, **kwargs: object) -> httpx.Response:
        return self.http.request(method, path, headers={"authorization": f"Bearer {key}"}, **kwargs)  # type: ignore[arg-type]

    def new_key(self, **body: object) -> dict[str, object]:
        response = self.admin("POST", "/admin/keys", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module", params=["per_request", "leased"])
def gw(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Gateway]:
    """The gateway, once reserving per request and once from budget leases (every test runs on both)."""
    work = tmp_path_factory.mktemp("keys")
    db = work / "ledger.db"
    config = CONFIG.format(db=db, reservations=request.param)
    with gateway_process(work, config, env={"MODELYARD_MASTER_KEY": MASTER}) as (url, log):
        gateway = Gateway(url, log, db)
        yield gateway
        gateway.http.close()


def ask(client: openai.OpenAI, words: str = "one two", max_tokens: int = 4, model: str = "echo") -> str:
    reply = client.chat.completions.create(
        model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": words}]
    )
    return reply.choices[0].message.content or ""


def test_key_lifecycle_with_the_sdk(gw: Gateway) -> None:
    created = gw.new_key(name="app", team_id="team-a", budgets=[{"period": "total", "limit_usd": 1000}])
    key = str(created["key"])
    assert key.startswith("myd_") and created["hint"] == f"myd_…{key[-4:]}"
    assert ask(gw.client(key)) == "echo: one two"
    # Listing shows the hint, never the key or its hash.
    listing = gw.admin("GET", "/admin/keys").text
    assert key not in listing and created["hint"] in listing and "hash" not in listing
    # Revoke: refused at once on this process (and within the 2 s cache elsewhere).
    assert gw.admin("POST", f"/admin/keys/{created['id']}/revoke").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        ask(gw.client(key))


def test_rotation_keeps_the_old_key_for_the_overlap(gw: Gateway) -> None:
    old = gw.new_key(name="rot")
    rotated = gw.admin("POST", f"/admin/keys/{old['id']}/rotate", json={"overlap_s": 1.5}).json()
    assert rotated["key"] != old["key"]
    assert ask(gw.client(str(old["key"]))) and ask(gw.client(str(rotated["key"])))
    time.sleep(3.7)  # overlap + the 2 s lookup cache
    with pytest.raises(openai.AuthenticationError):
        ask(gw.client(str(old["key"])))
    assert ask(gw.client(str(rotated["key"])))


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "Bearer nope",
        "Bearer myd_short",
        f"Bearer {generate_key()}",
        f"Bearer {generate_key()[:-1]}x",
        "Basic " + MASTER,
        f"Bearer {MASTER}x",
    ],
)
def test_bad_keys_get_one_uniform_401(gw: Gateway, presented: str) -> None:
    headers = {"authorization": presented} if presented else {}
    response = gw.http.post(
        "/v1/chat/completions",
        headers=headers,
        json={"model": "echo", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.json()["error"]["message"].startswith("invalid or missing API key")


def test_model_allow_list_and_max_tokens_cap(gw: Gateway) -> None:
    key = str(gw.new_key(models=["other"], max_tokens=8)["key"])
    client = gw.client(key)
    assert ask(client, model="other")
    with pytest.raises(openai.PermissionDeniedError, match="may not use model 'echo'"):
        ask(client, model="echo")
    with pytest.raises(openai.BadRequestError, match="cap of 8"):
        ask(client, model="other", max_tokens=9)


def test_budget_exceeded_is_a_clean_429_and_spend_is_exact(gw: Gateway) -> None:
    # "one two" → 2 prompt tokens; answer "echo: one two" → 3 tokens: $5 a request at $1/token.
    # Max cost reserved: prompt bytes + message overhead + max_tokens, a few tens of dollars.
    created = gw.new_key(name="budgeted", budgets=[{"period": "total", "limit_usd": 100}])
    client = gw.client(str(created["key"]))
    served = 0
    with pytest.raises(openai.RateLimitError) as info:
        for _ in range(100):
            ask(client)
            served += 1
    assert info.value.code == "budget_exceeded" and "budget_exceeded" in str(info.value)
    assert settled_spend(gw, str(created["id"]), expected=5 * served) == 5 * served
    budgets = gw.admin("GET", "/admin/budgets", params={"scope": "key", "scope_id": created["id"]}).json()[
        "data"
    ]
    assert budgets[0]["reserved_usd"] == "0"
    assert 100 - 5 * served < 60  # stopped only when the next request's max cost no longer fits
    report = gw.admin("GET", "/admin/spend", params={"by": "key", "key": created["id"], "since": "1h"}).json()
    assert report["data"][0]["requests"] == served and report["data"][0]["cost_usd"] == str(5 * served)


def test_concurrent_clients_never_overspend(gw: Gateway) -> None:
    """C1 through HTTP: 32 clients released together on a small budget."""
    created = gw.new_key(name="race", budgets=[{"period": "total", "limit_usd": 200}])
    key, barrier = str(created["key"]), threading.Barrier(32)
    statuses: list[int] = []

    def one() -> None:
        barrier.wait()
        response = httpx.post(
            gw.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "echo", "max_tokens": 4, "messages": [{"role": "user", "content": "one two"}]},
            timeout=30,
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=one) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spend = settled_spend(gw, str(created["id"]), expected=5 * statuses.count(200))
    assert set(statuses) <= {200, 429} and statuses.count(200) >= 1
    assert spend == 5 * statuses.count(200) and spend <= 200


def settled_spend(gw: Gateway, key_id: str, expected: float) -> float:
    """The key's spend once settlements (committed in batches, off the hot path) have landed."""
    deadline = time.monotonic() + 5
    while True:
        data = gw.admin("GET", "/admin/budgets", params={"scope": "key", "scope_id": key_id}).json()["data"]
        spend = float(data[0]["spend_usd"])
        if spend == expected or time.monotonic() > deadline:
            return spend
        time.sleep(0.05)


def test_team_rpm_limit_holds_with_retry_after(gw: Gateway) -> None:
    clients = [gw.client(str(gw.new_key(team_id="team-rl")["key"])) for _ in range(2)]
    results = []
    for i in range(6):
        try:
            ask(clients[i % 2])
            results.append(200)
        except openai.RateLimitError as exc:
            assert int(exc.response.headers["retry-after"]) >= 1
            results.append(429)
    assert results.count(200) == 3  # the team's 3 RPM, shared by both keys


def test_no_secret_in_the_database_or_the_log(gw: Gateway) -> None:
    """E6/E7: neither the master key nor any virtual key is stored or logged."""
    keys = [str(gw.new_key(name=f"canary{i}")["key"]) for i in range(3)]
    for key in keys:
        ask(gw.client(key))
    gw.http.post("/v1/chat/completions", headers={"authorization": f"Bearer {MASTER}x"}, json={})
    time.sleep(0.5)
    with sqlite3.connect(gw.db) as db:
        dump = "\n".join(db.iterdump())
    log = gw.log.read_text()
    journals = Path(f"{gw.db}.leases")  # storage.reservations: leased
    journal = "".join(p.read_text() for p in journals.iterdir()) if journals.is_dir() else ""
    for secret in (*keys, MASTER):
        assert secret not in dump and secret not in log and secret not in journal


ROUTES = [
    ("GET", "/admin/deployments", None),
    ("GET", "/admin/keys", None),
    ("GET", "/admin/keys/self", None),
    ("POST", "/admin/keys", {"name": "x"}),
    ("POST", "/admin/keys/{victim}/revoke", None),
    ("POST", "/admin/keys/{victim}/rotate", {"overlap_s": 0}),
    ("GET", "/admin/budgets", None),
    ("PUT", "/admin/budgets", {"scope": "team", "scope_id": "team-x", "period": "daily", "limit_usd": 5}),
    ("DELETE", "/admin/budgets", {"scope": "team", "scope_id": "team-x", "period": "daily"}),
    ("GET", "/admin/spend", None),
    ("GET", "/admin/ledger", None),
]
ALLOWED = {  # E4: the policy, cell by cell (True = 2xx, False = 403)
    "admin": [True] * 11,
    "viewer": [True, True, True, False, False, False, True, False, False, True, True],
    "key-holder": [False, False, True, False, False, False, True, False, False, True, False],
}


@pytest.mark.parametrize("role", list(ALLOWED))
@pytest.mark.parametrize("index", range(len(ROUTES)))
def test_role_matrix(gw: Gateway, role: str, index: int) -> None:
    caller = str(gw.new_key(role=role)["key"])
    victim = gw.new_key(name="victim")["id"]
    method, path, body = ROUTES[index]
    response = gw.admin(method, path.format(victim=victim), key=caller, json=body)
    if ALLOWED[role][index]:
        assert response.status_code in (200, 201), (role, method, path, response.text)
    else:
        assert response.status_code == 403, (role, method, path, response.text)
        assert response.json()["error"]["type"] == "permission_error"


def test_a_key_cannot_mint_a_wider_key(gw: Gateway) -> None:
    team_admin = str(gw.new_key(role="admin", team_id="team-t", models=["echo"], rpm=10)["key"])
    for body, reason in (
        ({"team_id": "team-other"}, "outside your own"),
        ({"models": ["echo", "other"], "rpm": 5}, "models beyond yours"),
        ({"models": ["echo"]}, "rpm above your 10"),
        ({"models": ["echo"], "rpm": 5, "role": "admin"}, None),
    ):
        response = gw.admin("POST", "/admin/keys", key=team_admin, json=body)
        if reason is None:
            assert response.status_code == 201 and response.json()["team_id"] == "team-t"
        else:
            assert response.status_code == 403 and reason in response.json()["error"]["message"]
    # ...and cannot touch keys of another team.
    outsider = gw.new_key(team_id="team-z")["id"]
    assert gw.admin("POST", f"/admin/keys/{outsider}/revoke", key=team_admin).status_code == 404
