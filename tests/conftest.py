from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixture_workspace() -> Path:
    return FIXTURES / "workspace"
