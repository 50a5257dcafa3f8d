"""`python -m schemas` regenerates schemas/json/*.json from the models."""

from schemas._export import write_json_schemas

for path in write_json_schemas():
    print(path)
