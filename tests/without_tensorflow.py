"""A Pi-like Python process for tests: a sitecustomize.py that makes importing TensorFlow, Keras or
music21 fail, as on a Pi that doesn't have them. Put its folder on PYTHONPATH."""

SITECUSTOMIZE = '''
import sys
class Block:
    """Importing tensorflow, keras or music21 fails, as on a Pi that doesn't have them."""
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "music21"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
'''
