#!/usr/bin/env python3
"""Validates OpenLineage events (a JSON-lines file) against the OpenLineage JSON schema.

usage: validate-openlineage.py SCHEMA.json EVENTS.jsonl
Exit 0 when every event validates (each line is one event), 1 naming the first that
does not, 77 when python3-jsonschema is missing (the test then skips and says why).
Formats (date-time, uri, uuid) are checked too.
"""
import json
import sys

try:
    import jsonschema
except ImportError:
    print("python3-jsonschema is not installed (apt-get install python3-jsonschema)")
    sys.exit(77)


def main():
    schema_path, events_path = sys.argv[1], sys.argv[2]
    with open(schema_path) as f:
        schema = json.load(f)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    count = 0
    with open(events_path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            event = json.loads(line)
            errors = sorted(validator.iter_errors(event), key=lambda e: list(e.path))
            if errors:
                e = errors[0]
                print(f"event {line_no} ({event.get('eventType')}) does not validate at "
                      f"/{'/'.join(str(p) for p in e.path)}: {e.message[:300]}")
                sys.exit(1)
            count += 1
    print(f"{count} events validate against {schema.get('$id', schema_path)}")
    sys.exit(0 if count else 1)


if __name__ == "__main__":
    main()
