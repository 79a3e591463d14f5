#!/usr/bin/env bash
# System packages curate needs: WordNet 3.0 (Debian's wordnet-base), read offline through nltk.
set -euo pipefail
if [ -f /usr/share/wordnet/data.noun ] || [ -n "${CURATE_WORDNET:-}" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "installing WordNet 3.0 (Debian package wordnet-base)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base >/dev/null
elif command -v apt-get >/dev/null 2>&1; then
  echo "WordNet is missing: run 'sudo apt-get install wordnet-base' (or set CURATE_WORDNET to a WordNet 3.0 dict folder)" >&2
else
  echo "WordNet is missing: install WordNet 3.0 (e.g. python -m nltk.downloader wordnet, or your OS's wordnet package) or set CURATE_WORDNET" >&2
fi
