"""docs/configuration.md's tables are what the settings' declarations
generate (``python -m pipeline.config_reference``), and name every field."""

import dataclasses

from pipeline import config_reference


def _doc():
  with open(config_reference.DOC) as f:
    return f.read()


def test_the_committed_reference_is_what_the_declarations_generate():
  text = _doc()
  assert config_reference.render(text) == text, (
      'docs/configuration.md is stale: run python -m pipeline.config_reference')
  assert config_reference.main(['--check']) == 0


def test_the_reference_has_a_row_per_declared_setting():
  text = _doc()
  for _, _, classes in config_reference.SECTIONS:
    for cls in classes:
      for field in dataclasses.fields(cls):
        assert f'| `{field.name}` |' in text, (cls.__name__, field.name)


def test_a_changed_declaration_makes_the_check_fail(monkeypatch):
  text = _doc()
  monkeypatch.setattr(config_reference, 'SECTIONS',
                      config_reference.SECTIONS[:-1])
  assert config_reference.render(text) != text
  assert config_reference.main(['--check']) == 1
