"""main.bicep as deployed with given parameters: pycep-parser's tree with the parameters, variables,
conditions (`a ? b : c`, `==`, `&&`, ...) and `concat` worked out, so rule tests can read what one
deployment would get.

pycep writes identifiers and string literals alike as Python strings; a string that names a
parameter or variable is read as that reference. What cannot be worked out here (a property of
another resource, a function of the deployment) stays a `Runtime` value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Runtime:
    """A value only Azure knows at deployment time (e.g. another resource's property)."""

    expression: str


class Deployment:
    def __init__(self, parsed: dict, given: dict[str, Any]):
        self.parsed = parsed
        self.parameters = {name: p.get("default") for name, p in parsed["parameters"].items()}
        self.parameters.update(given)
        self.variables = parsed.get("variables", {})

    def value(self, node: Any) -> Any:
        if isinstance(node, str):
            if node in self.parameters:
                return self.value(self.parameters[node])
            if node in self.variables:
                return self.value(self.variables[node]["value"])
            return node
        if isinstance(node, list):
            return [self.value(item) for item in node]
        if isinstance(node, dict):
            if "operator" in node and len(node) == 1:
                return self._operator(node["operator"])
            if "function" in node and len(node) == 1:
                return self._function(node["function"])
            return {key: self.value(item) for key, item in node.items()}
        return node

    def _operator(self, operator: dict) -> Any:
        kind, operands = operator["type"], operator.get("operands", {})
        if kind == "conditional":
            chosen = "true_value" if self.value(operands["condition"]) is True else "false_value"
            return self.value(operands[chosen])
        if kind in ("equals", "not_equals"):
            same = self.value(operands["operand_1"]) == self.value(operands["operand_2"])
            return same if kind == "equals" else not same
        if kind == "and":
            return self.value(operands["operand_1"]) is True and self.value(operands["operand_2"]) is True
        if kind == "or":
            return self.value(operands["operand_1"]) is True or self.value(operands["operand_2"]) is True
        if kind == "logical_not":
            return not self.value(operands.get("bool_value", operands.get("operand_1")))
        return Runtime(kind)

    def _function(self, function: dict) -> Any:
        kind, arguments = function["type"], list(function.get("parameters", {}).values())
        if kind == "concat":
            values = [self.value(argument) for argument in arguments]
            if all(isinstance(value, list) for value in values):
                return [item for value in values for item in value]
            return "".join(str(value) for value in values)
        if kind == "string":
            return str(self.value(arguments[0]))
        return Runtime(kind)

    def _config(self, resource: str) -> tuple[Any, dict]:
        """(condition or None, body): a conditional resource nests its body under `config`."""
        config = self.parsed["resources"][resource]["config"]
        if "condition" in config and "config" in config:
            return config["condition"], config["config"]
        return None, config

    def deployed(self, resource: str) -> bool:
        condition, _ = self._config(resource)
        return condition is None or self.value(condition) is True

    def resource(self, resource: str) -> dict:
        """The resource's whole body (name, identity, properties, ...) as deployed."""
        return self.value(self._config(resource)[1])

    def properties(self, resource: str) -> dict:
        return self.resource(resource)["properties"]
