"""/v1/contacts: find contacts, read one with its chats, change what the
team keeps about them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from outbox.admin import contacts as service
from outbox.admin.pages import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from outbox.api.auth import ChatAgent, Reader
from outbox.api.body import parse_model, read_body
from outbox.api.context import AppContext, context
from outbox.api.schemas import (
    Contact,
    ContactDetail,
    ContactList,
    UpdateContact,
    error_responses,
    request_body,
)

router = APIRouter(prefix="/v1/contacts", tags=["contacts"])


@router.get("", response_model=ContactList, responses=error_responses())
async def list_contacts(
    request: Request,
    principal: Reader,
    q: Annotated[str | None, Query(description="the start of a name (any case) or number",
                                   max_length=100)] = None,
    limit: int = Query(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
    cursor: str | None = None,
) -> ContactList:
    """The workspace's contacts, newest first."""
    def run(c: AppContext) -> ContactList:
        with c.transaction() as session:
            page = service.list_contacts(session, workspace_id=principal.workspace_id, q=q,
                                         limit=limit, cursor=cursor)
        return ContactList(contacts=[Contact.model_validate(ct) for ct in page.contacts],
                           next_cursor=page.next_cursor)

    return await run_in_threadpool(run, context(request))


@router.get("/{contact_id}", response_model=ContactDetail, responses=error_responses())
async def get_contact(contact_id: str, request: Request,
                      principal: Reader) -> ContactDetail:
    """A contact and its chats (one per channel it talks to)."""
    def run(c: AppContext) -> ContactDetail:
        with c.transaction() as session:
            contact, chats = service.get_contact(session, contact_id,
                                                 workspace_id=principal.workspace_id)
        return ContactDetail.model_validate({**Contact.model_validate(contact).model_dump(),
                                             "chats": chats})

    return await run_in_threadpool(run, context(request))


@router.patch("/{contact_id}", response_model=Contact,
              openapi_extra=request_body(UpdateContact), responses=error_responses(body=True))
async def update_contact(contact_id: str, request: Request, principal: ChatAgent) -> Contact:
    """Change the fields given (name, email, notes, tags); null clears name,
    email or notes. An inbound message's sender name fills an empty name,
    never replaces one."""
    body = parse_model(UpdateContact, await read_body(request))
    changes = body.model_dump(include=body.model_fields_set)

    def run(c: AppContext) -> Contact:
        with c.transaction() as session:
            contact = service.update_contact(session, contact_id, changes,
                                             workspace_id=principal.workspace_id)
        return Contact.model_validate(contact)

    return await run_in_threadpool(run, context(request))
