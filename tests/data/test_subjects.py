from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tfuq.data.subjects import (
    InputSourceLike,
    Subject,
    check_subject_id,
    find_section_files,
    find_subjects,
    match_subjects,
)
from tfuq.errors import UserError


@dataclasses.dataclass(frozen=True)
class Source:
    name: str
    csv_file: str = ""
    path_to_search: tuple[str, ...] = ()
    filename_contains: tuple[str, ...] = ()
    filename_not_contains: tuple[str, ...] = ()
    filename_removefromid: str = ""
    interp_order: int = 3
    pixdim: tuple[float, ...] = ()
    axcodes: tuple[str, ...] = ()


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    _touch(
        tmp_path / "mr",
        "sub01_T1.nii.gz",
        "sub01_T1c.nii.gz",
        "sub02_T1.nii",
        "sub02_T1c.nii.gz",
        "sub03_T1.nii.gz",
        "sub03_T1.txt",
        "notes.md",
    )
    _touch(tmp_path / "ct", "CT-sub01.nii.gz", "CT-sub02.nii.gz", "CT-sub04.nii.gz")
    return tmp_path


def test_protocol_is_satisfied_by_a_plain_dataclass():
    assert isinstance(Source("MR"), InputSourceLike)


def test_keywords_not_contains_and_ids(tree):
    t1 = Source(
        "T1", path_to_search=(str(tree / "mr"),), filename_contains=("T1",), filename_not_contains=("T1c",)
    )
    files = find_section_files(t1)
    assert files == {
        "sub01": tree / "mr" / "sub01_T1.nii.gz",
        "sub02": tree / "mr" / "sub02_T1.nii",
        "sub03": tree / "mr" / "sub03_T1.nii.gz",
    }
    t1c = Source("T1c", path_to_search=(str(tree / "mr"),), filename_contains=("T1c",))
    assert sorted(find_section_files(t1c)) == ["sub01", "sub02"]


def test_subjects_lacking_a_section_are_refused_naming_them(tree):
    sources = {
        "MR": Source(
            "MR",
            path_to_search=(str(tree / "mr"),),
            filename_contains=("_T1",),
            filename_not_contains=("T1c",),
        ),
        "CT": Source("CT", path_to_search=(str(tree / "ct"),), filename_contains=("CT",)),
    }
    with pytest.raises(UserError) as info:
        find_subjects(sources)
    message = str(info.value)
    assert message.startswith("subject 'sub03' has [MR] but no [CT] file (and 1 other subject(s): sub04); ")
    assert "'sub03,Excluded'" in message and "\n" not in message
    match = match_subjects(sources)
    assert [s.id for s in match.subjects] == ["sub01", "sub02"]
    assert match.incomplete == {"sub03": ("CT",), "sub04": ("MR",)}
    assert match.missing_message("sub04") == "subject 'sub04' has [CT] but no [MR] file"
    subjects = match.subjects
    assert subjects[0] == Subject(
        "sub01", {"MR": tree / "mr" / "sub01_T1.nii.gz", "CT": tree / "ct" / "CT-sub01.nii.gz"}
    )
    assert list(subjects[0].files) == ["MR", "CT"]
    with pytest.raises(TypeError):
        subjects[0].files["MR"] = Path("x")  # type: ignore[index]
    assert len({subjects[0], subjects[1], Subject("sub01", dict(subjects[0].files))}) == 2


def test_optional_sections_may_be_missing_for_some_or_all_subjects(tree):
    mr = Source(
        "MR", path_to_search=(str(tree / "mr"),), filename_contains=("_T1",), filename_not_contains=("T1c",)
    )
    t1c = Source("T1c", path_to_search=(str(tree / "mr"),), filename_contains=("T1c",))
    nothing = Source("LESION", path_to_search=(str(tree / "mr"),), filename_contains=("_lesion",))
    subjects = find_subjects({"MR": mr, "T1c": t1c, "LESION": nothing}, optional=("T1c", "LESION"))
    assert [(s.id, list(s.files)) for s in subjects] == [
        ("sub01", ["MR", "T1c"]),
        ("sub02", ["MR", "T1c"]),
        ("sub03", ["MR"]),
    ]


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("sub 01_T1.nii.gz", "sub 01"),
        ("s\u00fcb01_T1.nii.gz", "s\u00fcb01"),
        ("sub,01_T1.nii.gz", "sub,01"),
        ("sub#01_T1.nii.gz", "sub#01"),
    ],
)
def test_ids_that_cannot_name_files_are_refused_naming_the_file(tmp_path, name, bad):
    _touch(tmp_path / "mr", "sub02_T1.nii.gz", name)
    source = Source("MR", path_to_search=(str(tmp_path / "mr"),), filename_contains=("_T1",))
    with pytest.raises(UserError, match=r"cannot name output files; expected ASCII letters") as info:
        find_section_files(source)
    assert name in str(info.value) or repr(bad) in str(info.value)


@pytest.mark.parametrize("bad", ["../../evil", "a/b", "..", "sub 1", "caf\u00e9"])
def test_csv_ids_that_cannot_name_files_are_refused(tmp_path, bad):
    _touch(tmp_path, "x.nii.gz")
    listing = tmp_path / "list.csv"
    listing.write_text(f"{bad},x.nii.gz\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"list\.csv:1: subject id .* cannot name output files"):
        find_section_files(Source("MR", csv_file=str(listing)))
    assert check_subject_id("TCGA-DU-7294.v2_a", "x") == "TCGA-DU-7294.v2_a"


def test_removefromid_regex_and_multiple_folders(tmp_path):
    _touch(tmp_path / "a", "patient_001_ct_v2.nii.gz", "patient_002_ct_v10.nii.gz")
    _touch(tmp_path / "b", "patient_003_ct_v1.nii.gz")
    source = Source(
        "CT",
        path_to_search=(str(tmp_path / "a"), str(tmp_path / "b")),
        filename_contains=("_ct",),
        filename_removefromid=r"_v\d+$",
    )
    assert sorted(find_section_files(source)) == ["patient_001", "patient_002", "patient_003"]
    bad = dataclasses.replace(source, filename_removefromid="(unclosed")
    with pytest.raises(UserError, match=r"\[CT\] filename_removefromid"):
        find_section_files(bad)


def test_name_made_of_keywords_keeps_the_file_name(tmp_path):
    _touch(tmp_path / "x", "T1.nii.gz")
    assert list(
        find_section_files(Source("T1", path_to_search=(str(tmp_path / "x"),), filename_contains=("T1",)))
    ) == ["T1"]


def test_csv_input_relative_and_absolute(tmp_path):
    _touch(tmp_path / "img", "a.nii.gz", "b.nii.gz")
    listing = tmp_path / "lists" / "mr.csv"
    listing.parent.mkdir()
    listing.write_text(f"s1,../img/a.nii.gz\n\n# comment\ns2, {tmp_path / 'img' / 'b.nii.gz'}\n")
    # A csv that exists replaces the folder search, which would fail here.
    source = Source("MR", csv_file=str(listing), path_to_search=(str(tmp_path / "missing"),))
    assert find_section_files(source) == {
        "s1": tmp_path / "img" / "a.nii.gz",
        "s2": tmp_path / "img" / "b.nii.gz",
    }


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("s1,a.nii.gz,extra\n", r"mr\.csv:1: expected 'subject_id,path'"),
        ("s1,a.nii.gz\ns2\n", r"mr\.csv:2: expected"),
        ("s1,a.nii.gz\ns1,a.nii.gz\n", r"mr\.csv:2: subject id 's1' already listed on line 1"),
        ("s1,missing.nii.gz\n", r"mr\.csv:1: image file .*missing\.nii\.gz not found"),
        ("\n", r"mr\.csv: no 'subject_id,path' rows"),
    ],
)
def test_csv_errors(tmp_path, content, match):
    _touch(tmp_path, "a.nii.gz")
    listing = tmp_path / "mr.csv"
    listing.write_text(content)
    with pytest.raises(UserError, match=match) as info:
        find_section_files(Source("MR", csv_file=str(listing)))
    assert "\n" not in str(info.value)


def test_csv_missing_falls_back_to_search(tree):
    source = Source(
        "CT", csv_file=str(tree / "nope.csv"), path_to_search=(str(tree / "ct"),), filename_contains=("CT",)
    )
    assert sorted(find_section_files(source)) == ["sub01", "sub02", "sub04"]
    with pytest.raises(UserError, match=r"csv_file .*nope\.csv does not exist"):
        find_section_files(Source("CT", csv_file=str(tree / "nope.csv")))


def test_error_missing_folder(tmp_path):
    with pytest.raises(UserError, match=r"\[MR\] path_to_search folder .*absent does not exist"):
        find_section_files(Source("MR", path_to_search=(str(tmp_path / "absent"),)))


def test_error_no_match_names_section_folder_keywords(tree):
    source = Source(
        "PET", path_to_search=(str(tree / "ct"),), filename_contains=("PET",), filename_not_contains=("x",)
    )
    with pytest.raises(UserError) as info:
        find_section_files(source)
    message = str(info.value)
    assert "[PET]" in message and str(tree / "ct") in message and "'PET'" in message and "'x'" in message


def test_error_duplicate_id_names_both_files(tmp_path):
    _touch(tmp_path / "a", "sub01_T1.nii.gz")
    _touch(tmp_path / "b", "sub01_T1.nii")
    source = Source(
        "T1", path_to_search=(str(tmp_path / "a"), str(tmp_path / "b")), filename_contains=("T1",)
    )
    with pytest.raises(UserError, match="'sub01'") as info:
        find_section_files(source)
    assert str(tmp_path / "a" / "sub01_T1.nii.gz") in str(info.value)
    assert str(tmp_path / "b" / "sub01_T1.nii") in str(info.value)


def test_error_no_common_subject(tree):
    sources = {
        "MR": Source(
            "MR",
            path_to_search=(str(tree / "mr"),),
            filename_contains=("T1",),
            filename_not_contains=("T1c",),
        ),
        "CT": Source("CT", path_to_search=(str(tree / "ct"),), filename_contains=("sub",)),
    }
    with pytest.raises(UserError, match="No subject id is common") as info:
        find_subjects(sources)
    assert "MR: sub01, sub02, sub03" in str(info.value)
    assert "CT: CT-01, CT-02, CT-04" in str(info.value)
    with pytest.raises(ValueError, match="at least one"):
        find_subjects({})


def test_tcga_t1_t2(tcga_dir):
    folders = tuple(str(p) for p in sorted(tcga_dir.iterdir()) if p.is_dir())
    sources = {
        "T1": Source(
            "T1", path_to_search=folders, filename_contains=("_t1",), filename_not_contains=("_t1c",)
        ),
        "T2": Source("T2", path_to_search=folders, filename_contains=("_t2",)),
    }
    subjects = find_subjects(sources)
    assert [s.id for s in subjects] == ["TCGA-DU-7294", "TCGA-FG-6692"]
    for subject in subjects:
        assert subject.files["T1"] == tcga_dir / subject.id / f"{subject.id}_t1.nii.gz"
        assert subject.files["T2"] == tcga_dir / subject.id / f"{subject.id}_t2.nii.gz"
