"""trainer.redact: known secret values never leave a run in text."""
from trainer.redact import known_secrets, redact, url_password


def test_redact_replaces_plain_and_url_encoded_forms():
    secret = "s3cr/et+pw@x y"
    text = (f"key={secret}\nredis://:{'s3cr%2Fet%2Bpw%40x%20y'}@h:6379/0\n"
            f"form={'s3cr%2Fet%2Bpw%40x+y'} path={'s3cr/et%2Bpw%40x%20y'}")
    out = redact(text, [secret])
    assert secret not in out and "s3cr" not in out and out.count("***") == 4


def test_redact_keeps_text_without_secrets_and_ignores_tiny_values():
    assert redact("loss 2.31 step 10", ["sk-abcdef"]) == "loss 2.31 step 10"
    assert redact("a b c", ["a", ""]) == "a b c"
    assert redact("", ["sk-abcdef"]) == ""


def test_known_secrets_reads_the_swarm_env_names():
    env = {"ANTHROPIC_API_KEY": "sk-ant-123456", "GITHUB_TOKEN": "ghp_abcdef", "REDIS_PASSWORD": "redispw1",
           "SWARM_REDIS_URL": "redis://:p%40ss%2Fword@10.0.0.5:6379/0", "REDIS_URL": "redis://u:other-pw@h/1",
           "MY_KEY_VAR": "custom-key-1", "PATH": "/usr/bin", "HOME": "/root", "OMP_NUM_THREADS": "2"}
    got = set(known_secrets(env, names=["MY_KEY_VAR"]))
    assert got == {"sk-ant-123456", "ghp_abcdef", "redispw1", "p%40ss%2Fword", "p@ss/word", "other-pw",
                   "custom-key-1"}
    text = "\n".join(env.values())
    out = redact(text, got)
    for s in got:
        assert s not in out
    assert "/usr/bin" in out and "10.0.0.5:6379" in out


def test_url_password():
    assert url_password("redis://:hunter2@10.0.0.5:6379/0") == "hunter2"
    assert url_password("redis://127.0.0.1:6379/0") is None
    assert url_password(None) is None


def test_redact_defaults_to_this_process_env(monkeypatch):
    monkeypatch.setenv("SOME_PROVIDER_API_KEY", "sk-from-env-999")
    assert redact("leaked sk-from-env-999 here") == "leaked *** here"
