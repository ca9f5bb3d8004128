"""The stack marker's verdicts on what the fact probe read (the sandbox test proves them end to end)."""

from __future__ import annotations

import pytest

from gpuprov.provisioning.facts import MARK, ContainerFact, HostFacts, parse_facts
from gpuprov.provisioning.marker import HostServesAnotherStack, claim, marker_file


def test_the_probe_reads_the_marker_the_deploy_writes():
    written = marker_file("alice-box", "alice@lab").content.decode()
    facts = parse_facts(f"{MARK}stack\n{written}{MARK}end\n")
    assert claim(facts, "alice-box", "alice@lab", "10.0.0.5") is None
    with pytest.raises(HostServesAnotherStack) as taken:
        claim(facts, "bob-box", "bob@lab", "10.0.0.5")
    assert str(taken.value) == ("10.0.0.5 already serves stack 'alice-box' (owner alice@lab); remove it with "
                                "`gpuprov down --stack alice-box` from where it was made, or deploy to another machine")
    assert taken.value.exit_code == 2
    with pytest.raises(HostServesAnotherStack):  # the same name made by someone else is not ours either
        claim(facts, "alice-box", "mallory@lab", "10.0.0.5")


@pytest.mark.parametrize("text", ['{"stack": "x"}', "not json", '{"stack": "[red]x", "owner": "a@b"}',
                                  '{"stack": "x", "owner": "a\\u001b[2Jb"}'])
def test_a_marker_it_cannot_read_stops_deploy_without_echoing_it(text):
    with pytest.raises(HostServesAnotherStack) as unreadable:
        claim(HostFacts(stack_marker=text), "bob-box", "bob@lab", "10.0.0.5")
    assert str(unreadable.value).startswith("10.0.0.5 holds an unreadable stack marker (/opt/gpuprov/stack.json)")


def test_an_unmarked_host_with_gpuprov_containers_is_adopted_and_a_bare_one_is_just_marked():
    old = HostFacts(containers=[ContainerFact("gpuprov-vllm-cxr", "vllm", "running", "h", "img")])
    assert claim(old, "bob-box", "bob@lab", "10.0.0.5") == (
        "adopting 10.0.0.5: it runs gpuprov containers but has no stack marker (an older gpuprov deployed them); "
        "marking it as stack 'bob-box'")
    assert claim(HostFacts(containers=[ContainerFact("someone-else", "db", "running", "", "pg")]),
                 "bob-box", "bob@lab", "10.0.0.5") is None


def test_uninstall_leaves_a_host_whose_marker_names_another_stack_untouched(tmp_path):
    import shutil
    import subprocess

    from gpuprov.provisioning.uninstall import NOT_OURS, uninstall_script

    theirs = tmp_path / "opt/gpuprov/stack.json"
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(marker_file("alice-box", "alice@lab").content)
    (tmp_path / "etc/gpuprov").mkdir(parents=True)
    tools = tmp_path / "bin"  # what the guard needs, and no docker: a broken guard must not reach this machine's
    tools.mkdir()
    for tool in ("cmp", "cat", "rm", "id"):
        (tools / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    ran = subprocess.run(["/bin/sh", "-s"], input=uninstall_script("bob-box", "bob@lab"), capture_output=True,
                         text=True, env={"PATH": str(tools), "GPUPROV_HOST_ROOT": str(tmp_path)}, timeout=60)
    assert ran.returncode == NOT_OURS and '"stack": "alice-box"' in ran.stdout
    assert theirs.exists() and (tmp_path / "etc/gpuprov").is_dir()
