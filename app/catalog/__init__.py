"""The catalog: one owner of every served name (see ``catalog.Catalog``)."""

from app.catalog.catalog import Catalog, CatalogError, Lease, Target, served_name

__all__ = ["Catalog", "CatalogError", "Lease", "Target", "served_name"]
