"""The sensors table: where each detector is (site, building, floor, zone, description).

Loaded from ``configs/sensors.yaml`` by the store; edited here, so an incident reads
"Building B, floor 2, kitchen" rather than ``sim-00064``.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from alerting.sensors import SensorInfo
from serve.errors import json_response, request_error
from serve.operator import schemas
from serve.operator.routes import INVALID, attrs, store_of
from serve.schemas import ErrorResponse

router = APIRouter(tags=["sensors"])

SensorId = Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
NOT_FOUND = {404: {"model": ErrorResponse, "description": "no sensor with this id"}}


def sensor_out(sensor: SensorInfo) -> schemas.SensorOut:
    return schemas.SensorOut.model_validate({**attrs(sensor), "label": sensor.location.label()})


@router.get("/sensors", response_model=schemas.SensorList)
def list_sensors(request: Request) -> Response:
    return json_response(schemas.SensorList(sensors=[sensor_out(s) for s in store_of(request).sensors()]))


@router.get("/sensors/{sensor_id}", response_model=schemas.SensorOut, responses=NOT_FOUND)
def get_sensor(request: Request, sensor_id: str = SensorId) -> Response:
    sensor = store_of(request).sensor(sensor_id)
    if sensor is None:
        raise request_error(404, "sensor_id", "unknown", f"no sensor {sensor_id}")
    return json_response(sensor_out(sensor))


@router.put("/sensors/{sensor_id}", response_model=schemas.SensorOut, responses=INVALID)
def put_sensor(request: Request, body: schemas.SensorIn, sensor_id: str = SensorId) -> Response:
    store = store_of(request)
    store.upsert_sensor(SensorInfo(sensor_id=sensor_id, **body.model_dump()))
    return json_response(sensor_out(store.sensor(sensor_id)))


@router.delete("/sensors/{sensor_id}", response_model=schemas.Deleted, responses=NOT_FOUND)
def delete_sensor(request: Request, sensor_id: str = SensorId) -> Response:
    if not store_of(request).delete_sensor(sensor_id):
        raise request_error(404, "sensor_id", "unknown", f"no sensor {sensor_id}")
    return json_response(schemas.Deleted(deleted=sensor_id))
