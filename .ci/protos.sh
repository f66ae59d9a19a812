#!/usr/bin/env bash
# Protos: `buf lint` (rules and their exceptions in buf.yaml) and `buf breaking` against the
# previous commit, so a change that breaks generated clients or the wire fails CI. buf comes from
# npm (@bufbuild/buf: its platform package carries the binary) into .ci/.npm when not on PATH.
# The previous commit is HEAD~1: on main after a merge, that is main's previous commit. The
# check starts once that commit has a buf.yaml (the commit that introduced buf is the baseline);
# a clone without the previous commit (shallow) says so and skips only the breaking check.
# Usage: bash .ci/protos.sh   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUF_VERSION=1.75.0
if ! command -v buf >/dev/null 2>&1; then
  NPM_DIR="$ROOT/.ci/.npm"
  if [ ! -x "$NPM_DIR/node_modules/.bin/buf" ]; then
    command -v npm >/dev/null 2>&1 || {
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -q
      apt-get install -y -q --no-install-recommends npm
    }
    npm install --no-audit --no-fund --silent --prefix "$NPM_DIR" "@bufbuild/buf@$BUF_VERSION"
  fi
  export PATH="$NPM_DIR/node_modules/.bin:$PATH"
fi
echo "+ buf $(buf --version)"

echo "+ buf lint"
buf lint

if base=$(git rev-parse --verify -q 'HEAD~1^{commit}'); then
  if git cat-file -e "$base:buf.yaml" 2>/dev/null; then
    echo "+ buf breaking --against HEAD~1 ($base)"
    # A temporary worktree of the previous commit: works the same in a clone, a worktree
    # (where .git is a file) and offline.
    previous=$(mktemp -d)
    trap 'git worktree remove --force "$previous" >/dev/null 2>&1 || rm -rf "$previous"' EXIT
    git worktree add --detach --quiet "$previous" "$base"
    buf breaking --against "$previous"
  else
    echo "HEAD~1 has no buf.yaml: this commit is the breaking-change baseline"
  fi
else
  echo "no previous commit in this clone (shallow?): buf breaking skipped"
fi
echo "protos: ok"
