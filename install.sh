#!/usr/bin/env bash
# Install the rlm skill for Claude Code.
#
#   ./install.sh                      link ~/.claude/skills/rlm to this checkout (updates follow 'git pull')
#   ./install.sh --copy               copy the skill there instead (the checkout can then be moved or deleted)
#   ./install.sh --project DIR        install into DIR/.claude/skills/rlm, for that project only
#   ./install.sh --uninstall          remove what this script installed (add --project DIR for a project)
#
# Running it again is safe: an install of ours is replaced, anything else at the target is left alone.
# It touches nothing but the target folder (and creates its parent folders).
set -euo pipefail

SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
MARKER=".rlm-install"                      # written into a copy, so we know it is ours
FILES=(SKILL.md README.md rlm_repl.py rlm_helper.py rlmcore docs)

usage() { sed -n '2,10s/^# \{0,1\}//p' "$0"; }
die() { echo "install.sh: $*" >&2; exit 1; }

mode=link project="" uninstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --copy) mode=copy ;;
    --link) mode=link ;;
    --project) [ $# -ge 2 ] || die "--project needs a folder, e.g. --project ~/code/myapp"; project="$2"; shift ;;
    --project=*) project="${1#--project=}" ;;
    --uninstall) uninstall=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see ./install.sh --help)" ;;
  esac
  shift
done

if [ -n "$project" ]; then
  [ -d "$project" ] || die "project folder '$project' does not exist"
  base="$(cd "$project" && pwd -P)/.claude/skills"
  shown="$base/rlm"
else
  [ -n "${HOME:-}" ] || die "HOME is not set; use --project DIR"
  base="$HOME/.claude/skills"
  shown="~/.claude/skills/rlm"
fi
target="$base/rlm"

# Ours: a link to a folder holding this skill, or a copy carrying our marker.
is_ours() {
  if [ -L "$target" ]; then
    [ -f "$target/rlm_repl.py" ] && grep -q '^name: rlm$' "$target/SKILL.md" 2>/dev/null
  else
    [ -f "$target/$MARKER" ]
  fi
}

refuse() {
  local what="a folder"
  [ -L "$target" ] && what="a link to '$(readlink "$target")'"
  [ -f "$target" ] && what="a file"
  die "$target already exists and is not an rlm install ($what); it was left untouched.
Move it away or remove it yourself, then run ./install.sh again."
}

if [ "$uninstall" = 1 ]; then
  if [ ! -e "$target" ] && [ ! -L "$target" ]; then
    echo "Nothing to remove: $target does not exist."
    exit 0
  fi
  is_ours || refuse
  rm -rf "$target"
  echo "Removed $target."
  exit 0
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null \
  || die "rlm needs python3 3.9 or newer on PATH; found: $(python3 --version 2>&1 || echo 'no python3')"

if [ -e "$target" ] || [ -L "$target" ]; then
  is_ours || refuse
fi
mkdir -p "$base"

if [ "$mode" = link ]; then
  if [ -L "$target" ] && [ "$(cd "$target" && pwd -P)" = "$SOURCE" ]; then
    echo "Already installed: $target -> $SOURCE"
  else
    rm -rf "$target"
    ln -s "$SOURCE" "$target"
    echo "Installed: $target -> $SOURCE (a link: 'git pull' in the checkout updates the skill)"
  fi
else
  staging="$(mktemp -d "$base/.rlm-install.XXXXXX")"
  trap 'rm -rf "$staging"' EXIT
  for f in "${FILES[@]}"; do cp -R "$SOURCE/$f" "$staging/"; done
  find "$staging" -name __pycache__ -type d -prune -exec rm -rf {} +
  echo "$SOURCE" > "$staging/$MARKER"
  chmod 755 "$staging"
  rm -rf "$target"
  mv "$staging" "$target"
  trap - EXIT
  echo "Installed: a copy of $SOURCE in $target"
fi

cat <<EOF

Next:
  1. export ANTHROPIC_API_KEY=...      (the key sub-calls to Claude Haiku use)
  2. python3 $shown/rlm_repl.py doctor
  3. In Claude Code, ask about something too big to read, e.g.
     "What are the main error patterns in /var/log/app.log? Use the rlm skill."
EOF
