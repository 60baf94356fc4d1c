"""Every table is a DataFrame a user can download as CSV, shown without clipping a value."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.analysis.figures import text_column_width

# st.dataframe's default row height and header, in px: a table is sized to its rows up to a cap.
ROW_PX = 35
MAX_TABLE_PX = 600
# Long free text (notes, formulas) wraps in a tooltip rather than widening the table past the screen.
MAX_COLUMN_PX = 420


def table_height(n_rows: int, max_px: int = MAX_TABLE_PX) -> int:
    """Pixels that show ``n_rows`` rows and the header without an inner scrollbar, up to ``max_px``."""
    return min(ROW_PX * (n_rows + 1) + 3, max_px)


def fitted_column_config(df: pd.DataFrame, column_config: dict | None = None) -> dict:
    """``column_config`` plus, for every text column it does not configure, a width that fits the
    column's longest value: text cells (counts formatted as "21,290,828") are never clipped."""
    config = dict(column_config or {})
    for col in df.columns:
        if col in config or pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            continue
        width = min(text_column_width(df[col].tolist(), str(col)), MAX_COLUMN_PX)
        config[col] = st.column_config.TextColumn(str(col), width=width)
    return config


def show_table(df: pd.DataFrame, key: str, file_name: str | None = None, csv_frame: pd.DataFrame | None = None,
               fit: bool = True, **dataframe_kwargs) -> None:
    """st.dataframe plus a "Download CSV" button for exactly the rows shown.

    csv_frame: the raw table behind a formatted one (``figures.readable_table``): the CSV then holds
    exact numbers while the screen shows text. fit: size text columns to their longest value and
    the table to its rows (up to ``MAX_TABLE_PX``) unless ``height`` / ``column_config`` say otherwise.
    """
    if fit:
        dataframe_kwargs["column_config"] = fitted_column_config(df, dataframe_kwargs.get("column_config"))
        dataframe_kwargs.setdefault("height", table_height(len(df)))
    st.dataframe(df, **dataframe_kwargs)
    raw = df if csv_frame is None else csv_frame
    st.download_button(
        "Download CSV",
        data=raw.to_csv(index=not isinstance(raw.index, pd.RangeIndex)).encode("utf-8"),
        file_name=file_name or f"{key}.csv",
        mime="text/csv",
        key=f"csv_{key}",
    )
