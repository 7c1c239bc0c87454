from numbers import Integral, Real

def check_in(name, value, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


def check_number(name, value, low=None, high=None, integer=False, low_open=False, allow_none=False):
    if value is None and allow_none:
        return
    kind = Integral if integer else Real
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name} must be {'an int' if integer else 'a number'}, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")


