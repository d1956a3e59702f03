"""deploy/azure as deployed with given parameters: pycep-parser's tree of main.bicep and of each module
it calls, with the parameters, variables, conditions (`a ? b : c`, `==`, `&&`, ...), string
interpolation and a few functions worked out, so rule tests can read what one deployment would get.

pycep writes identifiers and string literals alike as Python strings; a string that names a
parameter or variable is read as that reference (so the templates give no variable the name of a
string they use), a resource or module name only where something is read from it. What only Azure knows (another resource's
property, a module output that comes from one, a function of the deployment) stays a `Runtime`
value that names where it comes from, e.g. `Runtime("migrateIdentity.properties.clientId")`.

pycep cannot parse `.bicepparam` files. Such a file is a `using` line and `param NAME = VALUE`
statements (and `var`s), whose values are Bicep expressions: `read_bicepparam` drops the `using`
line, turns each `param` into a `var` and lets pycep parse the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Runtime:
    """A value only Azure knows at deployment time, named by the expression it comes from."""

    expression: str


# deployer() as a user deploys; tests pass another one for a service principal.
USER_DEPLOYER = {"objectId": "00000000-0000-0000-0000-00000000d0e5", "tenantId": "tenant",
                 "userPrincipalName": "deployer@example.com"}
SERVICE_PRINCIPAL_DEPLOYER = {**USER_DEPLOYER, "userPrincipalName": ""}

# Properties of a resource that are known when the deployment starts (so may form a name).
START_PROPERTIES = {"id", "name", "type", "apiVersion"}


def _parser():
    import pycep  # imported here: the lint tests skip their module when it is missing

    return pycep.BicepParser()


@lru_cache(maxsize=None)
def parse_bicep(path: Path) -> dict:
    return _parser().parse(file_path=path)


@lru_cache(maxsize=None)
def parse_expression(text: str) -> Any:
    """One Bicep expression (the inside of a `${...}`), parsed as a variable's value."""
    return _parser().parse(text=f"var expression = {text}\n")["variables"]["expression"]["value"]


@dataclass(frozen=True)
class BicepParams:
    using: str
    assignments: dict  # name -> pycep value node
    variables: dict


@lru_cache(maxsize=None)
def read_bicepparam(path: Path) -> BicepParams:
    text = path.read_text(encoding="utf-8")
    using = re.search(r"^using\s+'([^']+)'", text, re.MULTILINE)
    assert using, f"{path.name}: no `using` line"
    names = re.findall(r"^param\s+(\w+)\s*=", text, re.MULTILINE)
    as_bicep = re.sub(r"^using\s+.*$", "", text, flags=re.MULTILINE)
    as_bicep = re.sub(r"^param(\s+\w+\s*=)", r"var\1", as_bicep, flags=re.MULTILINE)
    parsed = _parser().parse(text=as_bicep)
    variables = parsed.get("variables", {})
    assignments = {name: variables[name]["value"] for name in names}
    others = {name: entry for name, entry in variables.items() if name not in assignments}
    return BicepParams(using.group(1), assignments, others)


def bicepparam_values(params: BicepParams, environment: dict[str, str] | None = None) -> dict:
    """The values a .bicepparam file assigns, with readEnvironmentVariable reading `environment`."""
    evaluator = Deployment({"parameters": {}, "variables": params.variables}, {},
                           environment=environment or {})
    return {name: evaluator.value(node) for name, node in params.assignments.items()}


def access_path(node: Any) -> tuple[Any, list]:
    """`a.b[0].c` as (a, ['b', 0, 'c']). pycep nests property accesses to the right."""
    if isinstance(node, dict) and "operator" in node:
        operator = node["operator"]
        operands = operator.get("operands", {})
        if operator["type"] == "property_accessor":
            root, first = access_path(operands["operand_1"])
            head, rest = access_path(operands["operand_2"])
            return root, first + [head] + rest
        if operator["type"] == "index_accessor":
            root, first = access_path(operands["operand_1"])
            return root, first + [operands["operand_2"]]
        if operator["type"] == "function_accessor":
            root, first = access_path(operands["operand_1"])
            return root, first + [f"{operands['func_name']}()"]
    return node, []


class Deployment:
    """One template (main.bicep or a module) with its parameter values."""

    def __init__(self, parsed: dict, given: dict[str, Any], *, path: Path | None = None,
                 deployer: dict | None = None, environment: dict[str, str] | None = None):
        self.parsed = parsed
        self.path = path
        self.given = dict(given)  # already evaluated
        self.deployer = deployer or USER_DEPLOYER
        self.environment = environment or {}
        self.parameters = parsed.get("parameters", {})
        self.variables = parsed.get("variables", {})
        self.resources = parsed.get("resources", {})
        self.modules = parsed.get("modules", {})
        self._cache: dict[str, Any] = {}
        unknown = set(self.given) - set(self.parameters)
        assert not unknown or not self.parameters, f"not declared: {sorted(unknown)}"

    # --- values -------------------------------------------------------------------------------

    def value(self, node: Any) -> Any:
        if isinstance(node, str):
            return self._name_or_string(node)
        if isinstance(node, list):
            return [self.value(item) for item in node]
        if isinstance(node, dict):
            if "operator" in node and len(node) == 1:
                return self._operator(node["operator"])
            if "function" in node and len(node) == 1:
                return self._function(node["function"])
            return {self._key(key): self.value(item) for key, item in node.items()}
        return node

    def _key(self, key: str) -> Any:
        if len(key) >= 2 and key[0] == key[-1] == "'":
            key = key[1:-1]
        return self._interpolate(key) if "${" in key else key

    def _name_or_string(self, text: str) -> Any:
        if text in self.given:
            return self.given[text]
        if text in self.parameters:
            if text not in self._cache:
                default = self.parameters[text].get("default")
                self._cache[text] = None if default is None else self.value(default)
            return self._cache[text]
        if text in self.variables:
            if text not in self._cache:
                self._cache[text] = self.value(self.variables[text]["value"])
            return self._cache[text]
        if "${" in text:
            return self._interpolate(text)
        return text

    def _interpolate(self, text: str) -> Any:
        parts, position = [], 0
        for match in re.finditer(r"\$\{", text):
            if match.start() < position:
                continue
            parts.append(text[position:match.start()])
            depth, index = 1, match.end()
            while depth:
                depth += {"{": 1, "}": -1}.get(text[index], 0)
                index += 1
            inner = self.value(parse_expression(text[match.end():index - 1]))
            parts.append(inner)
            position = index
        parts.append(text[position:])
        if any(isinstance(part, Runtime) for part in parts):
            return Runtime("".join(p.expression if isinstance(p, Runtime) else str(p) for p in parts))
        return "".join(str(part) for part in parts)

    def _operator(self, operator: dict) -> Any:
        kind, operands = operator["type"], operator.get("operands", {})
        if kind == "conditional":
            condition = self.value(operands["condition"])
            if isinstance(condition, Runtime):
                return Runtime(f"({condition.expression}) ? ...")
            return self.value(operands["true_value" if condition is True else "false_value"])
        if kind in ("equals", "not_equals"):
            left, right = self.value(operands["operand_1"]), self.value(operands["operand_2"])
            if isinstance(left, Runtime) or isinstance(right, Runtime):
                return Runtime(kind)
            return (left == right) if kind == "equals" else (left != right)
        if kind in ("and", "or"):
            left, right = self.value(operands["operand_1"]), self.value(operands["operand_2"])
            if kind == "and" and (left is False or right is False):
                return False
            if kind == "or" and (left is True or right is True):
                return True
            if isinstance(left, Runtime) or isinstance(right, Runtime):
                return Runtime(kind)
            return left is True and right is True if kind == "and" else left is True or right is True
        if kind in ("not", "logical_not"):
            inner = self.value(operands.get("bool_value", operands.get("operand_1")))
            return Runtime("not") if isinstance(inner, Runtime) else not inner
        if kind == "coalesce":
            left = self.value(operands["operand_1"])
            return self.value(operands["operand_2"]) if left is None else left
        if kind in ("property_accessor", "index_accessor", "function_accessor"):
            return self._access(*access_path({"operator": operator}))
        return Runtime(kind)

    def _access(self, root: Any, path: list) -> Any:
        if isinstance(root, str) and root in self.resources:
            if path and path[0] == "name":
                return self.resource(root).get("name")
            return Runtime(".".join([root, *map(str, path)]))
        if isinstance(root, str) and root in self.modules:
            if len(path) >= 2 and path[0] == "outputs":
                return self.module(root).output(path[1])
            return Runtime(".".join([root, *map(str, path)]))
        current = self.value(root)
        for step in path:
            if isinstance(current, Runtime):
                return Runtime(f"{current.expression}.{step}")
            step = self.value(step) if not isinstance(step, (int, str)) else step
            try:
                current = current[step]
            except (KeyError, IndexError, TypeError):
                return Runtime(f"{root}.{step}")
        return current

    def _function(self, function: dict) -> Any:
        kind = function["type"]
        arguments = [self.value(argument) for argument in function.get("parameters", {}).values()]
        if any(isinstance(argument, Runtime) for argument in arguments) and kind not in ("union", "concat"):
            return Runtime(f"{kind}(...)")
        if kind == "concat":
            if all(isinstance(value, list) for value in arguments):
                return [item for value in arguments for item in value]
            return "".join(str(value) for value in arguments)
        if kind == "union":
            merged: dict = {}
            for value in arguments:
                if isinstance(value, Runtime):
                    return Runtime("union(...)")
                merged.update(value)
            return merged
        if kind == "string":
            return str(arguments[0]).lower() if isinstance(arguments[0], bool) else str(arguments[0])
        if kind == "empty":
            return arguments[0] in ("", [], {}, None)
        if kind == "int":
            return int(arguments[0])
        if kind == "bool":
            return arguments[0] if isinstance(arguments[0], bool) else str(arguments[0]).lower() == "true"
        if kind == "json":
            return arguments[0]
        if kind in ("toLower", "to_lower"):
            return str(arguments[0]).lower()
        if kind == "take":
            return arguments[0][: arguments[1]]
        if kind == "replace":
            return str(arguments[0]).replace(arguments[1], arguments[2])
        if kind == "deployer":
            return dict(self.deployer)
        if kind == "readEnvironmentVariable":
            if arguments[0] in self.environment:
                return self.environment[arguments[0]]
            return arguments[1] if len(arguments) > 1 else Runtime(f"environment variable {arguments[0]}")
        if kind == "unique_string" or kind == "uniqueString":
            return "uniq" + "x" * 9
        return Runtime(f"{kind}(...)")

    # --- resources and modules ----------------------------------------------------------------

    def _config(self, entries: dict, name: str) -> tuple[Any, dict]:
        """(condition or None, body): a conditional resource or module nests its body."""
        config = entries[name]["config"]
        if "condition" in config and "config" in config:
            return config["condition"], config["config"]
        return None, config

    def deployed(self, resource: str) -> bool:
        condition, _ = self._config(self.resources, resource)
        return condition is None or self.value(condition) is True

    def resource(self, resource: str) -> dict:
        """The resource's whole body (name, identity, properties, ...) as deployed."""
        return self.value(self._config(self.resources, resource)[1])

    def properties(self, resource: str) -> dict:
        return self.resource(resource)["properties"]

    def module_deployed(self, module: str) -> bool:
        condition, _ = self._config(self.modules, module)
        return condition is None or self.value(condition) is True

    def module_path(self, module: str) -> Path:
        assert self.path is not None
        return (self.path.parent / self.modules[module]["detail"]["path"]).resolve()

    def module_params(self, module: str) -> dict:
        return self.value(self._config(self.modules, module)[1].get("params", {}))

    def module(self, module: str) -> "Deployment":
        key = f"module {module}"
        if key not in self._cache:
            path = self.module_path(module)
            self._cache[key] = Deployment(parse_bicep(path), self.module_params(module), path=path,
                                          deployer=self.deployer, environment=self.environment)
        return self._cache[key]

    def output(self, name: str) -> Any:
        return self.value(self.parsed["outputs"][name]["value"])
