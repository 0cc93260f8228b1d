"""The code file MLflow runs to rebuild the leadscore model (MLflow "models from code").

MLflow copies this file into the logged model and executes it on ``mlflow.pyfunc.load_model``; the
model object comes from the installed leadscore package, so nothing is pickled and the model loads
wherever the leadscore wheel is installed. Not imported by leadscore itself: importing it registers
the model with MLflow, which is only wanted when MLflow loads it.
"""

from mlflow.models import set_model

from leadscore.training.pyfunc import LeadscoreModel

set_model(LeadscoreModel())
