import sys
from pathlib import Path

CROSS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CROSS))
