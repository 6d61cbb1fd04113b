# shellcheck shell=bash
# supported_pythons: one interpreter per supported minor version found here, the primary
# (3.12) first. PYTHONS="/opt/py312/bin/python3 python3.13" overrides the search.
supported_pythons() {
  if [ -n "${PYTHONS:-}" ]; then
    tr ' ' '\n' <<<"$PYTHONS" | sed '/^$/d'
    return
  fi
  local minor candidate
  for minor in 12 13; do
    for candidate in "python3.$minor" "$HOME"/.pyenv/versions/3."$minor".*/bin/python3."$minor" \
                     /usr/bin/python3."$minor" /usr/local/bin/python3."$minor"; do
      if "$candidate" -c 'import sys, venv' >/dev/null 2>&1; then
        echo "$candidate"
        break
      fi
    done
  done
}
