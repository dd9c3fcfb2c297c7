#!/usr/bin/env python3
"""The declared rust-version is real: set, at most the installed rustc, and at least every
(normal or build) dependency's own rust-version, so the declared toolchain can build them.

The crate's own use of newer std APIs is checked by clippy's `incompatible_msrv` lint, which
reads rust-version (the clippy step runs with -D warnings). No older toolchain is installed
on CI, so these two checks are what can be done without downloading one.

Reads `cargo metadata --format-version 1 --all-features` on stdin; the installed rustc's
version is argv[1].
"""

import json
import sys


def version(text):
    return tuple(int(part) for part in text.split("-")[0].split("."))


def main():
    metadata = json.load(sys.stdin)
    installed = version(sys.argv[1])
    packages = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    root = next(p for p in metadata["packages"] if p["name"] == "actix-nsq")
    declared = root.get("rust_version")
    if not declared:
        sys.exit("FAILED: Cargo.toml declares no rust-version")
    if version(declared) > installed:
        sys.exit(f"FAILED: rust-version {declared} is newer than the installed rustc {sys.argv[1]}")

    # Everything the library needs to build (not dev-dependencies: users do not build those).
    def needed(dep):
        return any(kind["kind"] in (None, "build") for kind in dep["dep_kinds"])

    seen, stack = set(), [d["pkg"] for d in nodes[root["id"]]["deps"] if needed(d)]
    while stack:
        pkg = stack.pop()
        if pkg not in seen:
            seen.add(pkg)
            stack.extend(d["pkg"] for d in nodes[pkg]["deps"] if needed(d))
    newer = sorted(
        f"{packages[p]['name']} {packages[p]['version']} needs {packages[p]['rust_version']}"
        for p in seen
        if packages[p].get("rust_version")
        and version(packages[p]["rust_version"]) > version(declared)
    )
    if newer:
        sys.exit(f"FAILED: rust-version {declared} cannot build: " + "; ".join(newer))
    highest = max(
        (version(packages[p]["rust_version"]), packages[p]["name"])
        for p in seen
        if packages[p].get("rust_version")
    )
    print(
        f"rust-version {declared}: <= rustc {sys.argv[1]}; {len(seen)} dependencies, "
        f"the most demanding {highest[1]} needs {'.'.join(map(str, highest[0]))}"
    )


if __name__ == "__main__":
    main()
