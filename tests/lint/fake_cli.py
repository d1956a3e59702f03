"""A stand-in for `az` and `docker` in tests/lint/test_deploy_scripts.py: records each call and
answers from FAKE_CLI_ANSWERS, keyed by the longest leading words that match ("az containerapp
show"), one answer per call with the last one repeated. A command without answers succeeds
silently."""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    argv = sys.argv[1:]
    with open(os.environ["FAKE_CLI_CALLS"], "a", encoding="utf-8") as calls:
        calls.write(json.dumps(argv) + "\n")
    with open(os.environ["FAKE_CLI_ANSWERS"], encoding="utf-8") as file:
        answers = json.load(file)
    matching = [key for key in answers if argv[:len(key.split())] == key.split()]
    if not matching:
        return 0
    key = max(matching, key=lambda k: len(k.split()))
    with open(os.environ["FAKE_CLI_STATE"], encoding="utf-8") as file:
        state = json.load(file)
    count = state.get(key, 0)
    state[key] = count + 1
    with open(os.environ["FAKE_CLI_STATE"], "w", encoding="utf-8") as file:
        json.dump(state, file)
    answer = answers[key][min(count, len(answers[key]) - 1)]
    if isinstance(answer, str):
        answer = {"stdout": answer}
    if answer.get("stdout"):
        print(answer["stdout"])
    if answer.get("stderr"):
        print(answer["stderr"], file=sys.stderr)
    return answer.get("exit", 0)


if __name__ == "__main__":
    sys.exit(main())
