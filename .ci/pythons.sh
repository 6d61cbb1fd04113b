# shellcheck shell=bash
# supported_pythons: one interpreter per supported minor version found here, newest last.
# PYTHONS="python3.11 /opt/py312/bin/python3" overrides the search.
supported_pythons() {
  if [ -n "${PYTHONS:-}" ]; then
    tr ' ' '\n' <<<"$PYTHONS" | sed '/^$/d'
    return
  fi
  local minor candidate
  for minor in 11 12; do
    for candidate in "python3.$minor" "$HOME"/.pyenv/versions/3."$minor".*/bin/python3."$minor" \
                     /usr/bin/python3."$minor" /usr/local/bin/python3."$minor"; do
      if "$candidate" -c 'import sys, venv' >/dev/null 2>&1; then
        echo "$candidate"
        break
      fi
    done
  done
}
